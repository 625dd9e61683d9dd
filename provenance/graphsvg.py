"""A node's neighbourhood drawn server-side as SVG (rings by depth), for the admin."""
from __future__ import annotations

import math
from html import escape

from .selectors import Lineage

COLOURS = {"atom": "#4e79a7", "model": "#f28e2b", "run": "#e15759", "step": "#76b7b2", "agent": "#59a14f",
           "activity": "#edc948"}
SIZE, RING = 640, 95


def _positions(graph: Lineage) -> dict[int, tuple[float, float]]:
    rings: dict[int, list[int]] = {}
    for node in graph.nodes:
        rings.setdefault(graph.depths.get(node.pk, 0), []).append(node.pk)
    centre = SIZE / 2
    pos = {}
    for depth, ids in rings.items():
        for i, pk in enumerate(ids):
            angle = 2 * math.pi * i / len(ids) + depth * 0.4
            radius = 0 if depth == 0 else min(RING * depth, centre - 30)
            pos[pk] = (centre + radius * math.cos(angle), centre + radius * math.sin(angle))
    return pos


def neighbourhood_svg(graph: Lineage) -> str:
    pos = _positions(graph)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SIZE} {SIZE}" width="{SIZE}" height="{SIZE}" '
             'font-family="sans-serif" font-size="10">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="18" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>']
    for edge in graph.edges:
        (x1, y1), (x2, y2) = pos[edge.source_id], pos[edge.target_id]
        parts.append(f'<line class="edge" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#999" '
                     f'stroke-width="{0.5 + 2 * min(edge.weight, 1):.2f}" marker-end="url(#arrow)">'
                     f'<title>{escape(edge.type)} ({edge.weight:g})</title></line>')
    for node in graph.nodes:
        x, y = pos[node.pk]
        stroke = "#d00" if node.retracted_at else ("#f90" if node.flagged_at else "#333")
        radius = 12 if node.pk == graph.root.pk else 8
        parts.append(f'<g class="node"><circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{COLOURS[node.kind]}" '
                     f'stroke="{stroke}" stroke-width="2"><title>{escape(node.key)}</title></circle>'
                     f'<text x="{x + 11:.1f}" y="{y + 4:.1f}">{escape((node.label or node.ref)[:24])}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
