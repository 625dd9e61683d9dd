"""Trigram search matches the head of an atom's text (left(text, 256): headings, titles, names).

The whole-text trigram index made every query recheck word_similarity over whole bodies (~800 ms a
query on 1,928 documentation sections); the head index is also far smaller to build and maintain.
"""

import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('atoms', '0003_deferred_text_index'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='atom',
            name='atom_trgm',
        ),
        migrations.AddIndex(
            model_name='atom',
            index=django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Left('text', 256), name='gin_trgm_ops'), condition=models.Q(('search_vector__isnull', False)), name='atom_trgm_head'),
        ),
    ]
