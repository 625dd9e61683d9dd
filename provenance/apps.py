from django.apps import AppConfig


class ProvenanceConfig(AppConfig):
    name = "provenance"

    def ready(self) -> None:
        from atoms import signals as atom_signals

        from . import receivers

        atom_signals.atoms_ingested.connect(receivers.on_atoms_ingested, dispatch_uid="provenance.atoms_ingested")
        atom_signals.atom_deleted.connect(receivers.on_atom_deleted, dispatch_uid="provenance.atom_deleted")
        atom_signals.atoms_embedded.connect(receivers.on_atoms_embedded, dispatch_uid="provenance.atoms_embedded")
