"""Text indexing can be deferred (bulk ingest) and redundant indexes go.

- atoms_atom.search_vector: a plain column set by a trigger (same value as the generated column it
  was), left NULL inside a transaction that set `atoms.defer_text_index = 'on'`; atom_fts and
  atom_trgm cover only rows whose search_vector is set (NULL = waiting for `atoms.index_text`).
- atoms_atom.sha256 stays unique by the constraint atom_sha256_unique, without the varchar_pattern_ops
  twin Django adds to a unique CharField (sha256 is only compared for equality).
- Indexes dropped: atoms_atom.modality (atom_modality_time leads with it), historicalatom sha256 /
  modality / created_at and historicalatomrelation source / target (history is read by id and
  history_date), atomrelation source / target (atom_relation_unique and atom_relation_in lead with them).
"""
import django.contrib.postgres.indexes
import django.contrib.postgres.search
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

SEARCH_VECTOR_TRIGGER = """
ALTER TABLE atoms_atom ALTER COLUMN search_vector DROP EXPRESSION;
CREATE FUNCTION atoms_atom_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.search_vector := to_tsvector('english'::regconfig, COALESCE(NEW.text, ''));
  RETURN NEW;
END $$;
CREATE TRIGGER atoms_atom_search_vector BEFORE INSERT OR UPDATE OF text ON atoms_atom FOR EACH ROW
  WHEN (current_setting('atoms.defer_text_index', true) IS DISTINCT FROM 'on')
  EXECUTE FUNCTION atoms_atom_search_vector();
"""
SEARCH_VECTOR_GENERATED = """
DROP TRIGGER atoms_atom_search_vector ON atoms_atom;
DROP FUNCTION atoms_atom_search_vector();
ALTER TABLE atoms_atom DROP COLUMN search_vector;
ALTER TABLE atoms_atom ADD COLUMN search_vector tsvector
  GENERATED ALWAYS AS (to_tsvector('english'::regconfig, COALESCE(text, ''))) STORED;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('atoms', '0002_vector_indexes'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='atom',
            constraint=models.UniqueConstraint(fields=('sha256',), name='atom_sha256_unique'),
        ),
        migrations.AlterField(
            model_name='atom',
            name='sha256',
            field=models.CharField(max_length=64),
        ),
        migrations.RemoveIndex(
            model_name='atom',
            name='atom_fts',
        ),
        migrations.RemoveIndex(
            model_name='atom',
            name='atom_trgm',
        ),
        migrations.AlterField(
            model_name='atom',
            name='modality',
            field=models.CharField(choices=[('text', 'Text'), ('code', 'Code'), ('document', 'Document'), ('image', 'Image'), ('audio', 'Audio'), ('video', 'Video'), ('video_frame', 'Video Frame'), ('sensor', 'Sensor'), ('binary', 'Binary'), ('model', 'Model'), ('tensor', 'Tensor'), ('token', 'Token'), ('event', 'Event'), ('concept', 'Concept')], max_length=16),
        ),
        # Django cannot alter a GeneratedField: the column keeps its values and loses its expression; the
        # trigger computes the same value on insert and when text changes, unless the transaction set
        # atoms.defer_text_index = 'on' (atoms.bulk), which leaves it NULL for the atoms.index_text task.
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AlterField(
                model_name='atom',
                name='search_vector',
                field=django.contrib.postgres.search.SearchVectorField(editable=False, null=True),
            )],
            database_operations=[migrations.RunSQL(SEARCH_VECTOR_TRIGGER, SEARCH_VECTOR_GENERATED)],
        ),
        migrations.AlterField(
            model_name='atomrelation',
            name='source',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='relations_out', to='atoms.atom'),
        ),
        migrations.AlterField(
            model_name='atomrelation',
            name='target',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='relations_in', to='atoms.atom'),
        ),
        migrations.AlterField(
            model_name='historicalatom',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name='historicalatom',
            name='modality',
            field=models.CharField(choices=[('text', 'Text'), ('code', 'Code'), ('document', 'Document'), ('image', 'Image'), ('audio', 'Audio'), ('video', 'Video'), ('video_frame', 'Video Frame'), ('sensor', 'Sensor'), ('binary', 'Binary'), ('model', 'Model'), ('tensor', 'Tensor'), ('token', 'Token'), ('event', 'Event'), ('concept', 'Concept')], max_length=16),
        ),
        migrations.AlterField(
            model_name='historicalatom',
            name='sha256',
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name='historicalatomrelation',
            name='source',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='atoms.atom'),
        ),
        migrations.AlterField(
            model_name='historicalatomrelation',
            name='target',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='atoms.atom'),
        ),
        migrations.AddIndex(
            model_name='atom',
            index=django.contrib.postgres.indexes.GinIndex(condition=models.Q(('search_vector__isnull', False)), fields=['search_vector'], name='atom_fts'),
        ),
        migrations.AddIndex(
            model_name='atom',
            index=django.contrib.postgres.indexes.GinIndex(condition=models.Q(('search_vector__isnull', False)), fields=['text'], name='atom_trgm', opclasses=['gin_trgm_ops']),
        ),
    ]
