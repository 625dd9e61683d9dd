from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from atoms.selectors import atom_by_ref
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound

from ..export import openlineage_events, prov_json
from ..models import ProvNode
from ..selectors import Lineage, check_as_of, impact, lineage, shortest_path
from ..services import atom_retract, node_get
from . import serializers as s


def _graph(result: Lineage) -> dict:
    by_id = {n.pk: n for n in result.nodes}
    entries = {n.pk: {"id": n.key, "type": n.kind, "depth": result.depths.get(n.pk, 0), "data": n,
                      "inEdges": [], "outEdges": []} for n in result.nodes}
    for e in result.edges:
        edge = {"origin": by_id[e.source_id].key, "destination": by_id[e.target_id].key, "type": e.type,
                "weight": e.weight, "time": e.valid_from}
        entries[e.source_id]["outEdges"].append(edge)
        entries[e.target_id]["inEdges"].append(edge)
    return {"graph": list(entries.values())}


def _params(names):
    return [OpenApiParameter(n, str) for n in names]


class LineageView(TenantAPIView):
    def _lineage(self, query) -> Lineage:
        as_of = check_as_of(tenant=self.tenant, as_of=query.get("as_of"))
        return lineage(node=node_get(key=query["node"]), depth=query["depth"], direction=query["direction"],
                       as_of=as_of)

    @extend_schema(parameters=_params(["node", "depth", "direction", "as_of"]), responses=s.LineageOutput,
                   summary="Lineage of a node (Marquez-style graph), upstream/downstream to a depth, as of a time")
    def get(self, request):
        query = self.validated(s.LineageQuery, request.query_params)
        return Response(s.LineageOutput(_graph(self._lineage(query))).data)


class ExportView(LineageView):
    @extend_schema(parameters=_params(["node", "depth", "direction", "as_of", "standard"]), responses=dict,
                   summary="Lineage as a W3C PROV-JSON document or as OpenLineage run events")
    def get(self, request):
        query = self.validated(s.ExportQuery, request.query_params)
        result = self._lineage(query)
        if query["standard"] == "openlineage":
            return Response({"events": openlineage_events(result, namespace=f"hartonomous/{self.tenant.schema_name}")})
        return Response(prov_json(result))


class PathView(TenantAPIView):
    @extend_schema(parameters=_params(["source", "target", "max_depth", "as_of"]), responses=s.PathOutput,
                   summary="Shortest path between two provenance nodes (edges in either direction)")
    def get(self, request):
        query = self.validated(s.PathQuery, request.query_params)
        as_of = check_as_of(tenant=self.tenant, as_of=query.get("as_of"))
        source, target = node_get(key=query["source"]), node_get(key=query["target"])
        path = shortest_path(source=source, target=target, max_depth=query["max_depth"], as_of=as_of)
        if path is None:
            raise NotFound("No path within max_depth.", details={"source": source.key, "target": target.key,
                                                                 "max_depth": query["max_depth"]})
        return Response(s.PathOutput({"path": path, "hops": len(path) - 1}).data)


def _atom(ref: str):
    atom = atom_by_ref(ref=ref, include_deleted=True)
    if atom is None:
        raise NotFound("No such atom.", details={"atom": ref})
    return atom


class ImpactView(TenantAPIView):
    @extend_schema(parameters=_params(["as_of"]), responses=s.ImpactOutput,
                   summary="What retracting this atom would touch: derived atoms, runs and steps, with mass")
    def get(self, request, ref: str):
        query = self.validated(s.ImpactQuery, request.query_params)
        as_of = check_as_of(tenant=self.tenant, as_of=query.get("as_of"))
        atom = _atom(ref)
        node = ProvNode.objects.filter(kind="atom", ref=str(atom.pk)).first()
        report = impact(node=node, as_of=as_of) if node else None
        body = {"atom": atom.pk, "node": node, "retracted": bool(node and node.retracted_at),
                "total_mass": report.total_mass if report else 0.0,
                "dependants": report.dependants if report else []}
        return Response(s.ImpactOutput(body).data)


class RetractView(TenantAPIView):
    @extend_schema(request=s.RetractInput, responses={201: s.RetractionOutput},
                   summary="Retract an atom: mark it and flag everything that depends on it (409 if already)")
    def post(self, request, ref: str):
        data = self.validated(s.RetractInput, request.data)
        atom = _atom(ref)
        retraction = atom_retract(tenant=self.tenant, atom=atom, reason=data["reason"],
                                  agent=str(self.principal)[:100])
        body = {"atom": atom.pk, "reason": retraction.reason, "at": retraction.at,
                "flagged": len(retraction.dependants), "dependants": retraction.dependants}
        return Response(s.RetractionOutput(body).data, status=status.HTTP_201_CREATED)
