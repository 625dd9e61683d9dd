from rest_framework import serializers

from ..models import Approval, CandidateAction, ImprovementRun, Signal


class TriggerInput(serializers.Serializer):
    dry_run = serializers.BooleanField(default=False)
    actions = serializers.ListField(child=serializers.DictField(), max_length=50, required=False, default=list,
                                    help_text="Operator-proposed actions: {executor, params, expected_gain, rationale}")


class DecisionInput(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    note = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


class SignalOutput(serializers.ModelSerializer):
    class Meta:
        model = Signal
        fields = ["kind", "value", "available", "details"]


class ApprovalOutput(serializers.ModelSerializer):
    action_id = serializers.IntegerField(read_only=True)
    run_id = serializers.IntegerField(source="action.run_id", read_only=True)
    executor = serializers.CharField(source="action.executor", read_only=True)
    params = serializers.JSONField(source="action.params", read_only=True)

    class Meta:
        model = Approval
        fields = ["id", "state", "action_id", "run_id", "executor", "params", "expected_effect", "evidence",
                  "decided_by", "note", "created_at", "expires_at", "decided_at"]


class ActionOutput(serializers.ModelSerializer):
    approval_id = serializers.SerializerMethodField()

    class Meta:
        model = CandidateAction
        fields = ["id", "executor", "params", "idempotency_key", "rationale", "expected_gain", "risk", "score", "rank",
                  "state", "attempts", "result", "error", "approval_id", "started_at", "finished_at"]

    def get_approval_id(self, obj) -> int | None:
        approval = getattr(obj, "approval", None) if hasattr(obj, "approval") else None
        return approval.pk if approval else None


class RunOutput(serializers.ModelSerializer):
    budget = serializers.SerializerMethodField()

    class Meta:
        model = ImprovementRun
        fields = ["id", "state", "phase", "trigger", "dry_run", "budget", "stop_reason", "error", "phase_log",
                  "created_at", "started_at", "finished_at"]

    def get_budget(self, obj) -> dict:
        return {"actions": [obj.actions_used, obj.max_actions], "seconds": [round(obj.seconds_used, 3), obj.max_seconds],
                "tokens": [obj.tokens_used, obj.max_tokens], "credits": [str(obj.credits_used), str(obj.max_credits)]}


class RunDetailOutput(RunOutput):
    signals = SignalOutput(many=True, read_only=True)
    actions = ActionOutput(many=True, read_only=True)

    class Meta(RunOutput.Meta):
        fields = [*RunOutput.Meta.fields, "signals", "actions"]
