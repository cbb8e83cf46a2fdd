"""A tree for people: `render_text` (terminal: the best path and the top of the tree with value bars)
and `render_html` (one self-contained page: a collapsible tree coloured by value, no network)."""

from __future__ import annotations

import html

from agentrm_jax.explore.tree import Node, Tree

__all__ = ["render_html", "render_text", "value_bar"]


def value_bar(value: float, width: int = 10) -> str:
    """`[#####.....]` for value 0.5 at width 10 (the value rounded to the nearest cell)."""
    filled = round(min(max(value, 0.0), 1.0) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _label(node: Node) -> str:
    if node.parent is None:
        return "(start)"
    mark = " [terminal: outcome %.2f]" % node.outcome if node.terminal and node.outcome is not None else ""
    return f"{node.action or '(no action)'}{mark}"


def render_text(tree: Tree, *, depth: int = 2, width: int = 10) -> str:
    """The tree's summary, best path (most visited child each step) and its nodes down to `depth`."""
    root = tree.nodes[0]
    kids = tree.children()
    lines = [f"{tree.key}: {len(tree.nodes)} nodes, {tree.simulations} simulations, root value {root.value:.3f} "
             f"({root.visits} visits)", "", "best path (most visited child at each step):"]
    for step, i in enumerate(tree.best_path()[1:], 1):
        n = tree.nodes[i]
        lines.append(f"  {step:>2}. {value_bar(n.value, width)} {n.value:.3f}  n={n.visits:<4} {_label(n)}")
    lines += ["", f"top of the tree (depth <= {depth}; children by visits):"]

    def walk(i: int, prefix: str, last: bool, d: int) -> None:
        n = tree.nodes[i]
        branch = "" if n.parent is None else ("`- " if last else "|- ")
        lines.append(f"{value_bar(n.value, width)} {n.value:.3f} n={n.visits:<4} {prefix}{branch}{_label(n)}")
        if d >= depth:
            if kids[i]:
                lines.append(" " * (width + 16) + prefix + ("   " if last else "|  ") + f"... {len(kids[i])} more")
            return
        order = sorted(kids[i], key=lambda c: (-tree.nodes[c].visits, c))
        child_prefix = prefix + ("" if n.parent is None else ("   " if last else "|  "))
        for j, c in enumerate(order):
            walk(c, child_prefix, j == len(order) - 1, d + 1)

    walk(0, "", True, 0)
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.2em} .meta{color:#555;margin-bottom:1em}
details{margin-left:1.4em;border-left:1px dotted #aaa;padding-left:.4em}
summary{cursor:pointer;padding:2px 4px;border-radius:4px;margin:2px 0;list-style-position:outside}
.leaf{margin-left:1.4em;padding:2px 4px;border-radius:4px;margin:2px 0 2px 2.4em}
.bar{display:inline-block;width:80px;height:.7em;background:#ddd;margin-right:.4em;vertical-align:middle}
.bar span{display:block;height:100%;background:#333}
.num{font-family:monospace} .obs{color:#444;font-size:.85em;margin:0 0 4px 2.4em;white-space:pre-wrap}
.best>summary,.best.leaf{outline:2px solid #1a5fb4} button{margin-right:.5em}
"""

_JS = """
function setAll(open){document.querySelectorAll('details').forEach(function(d){d.open=open;});}
function toggleObs(){document.querySelectorAll('.obs').forEach(function(o){o.hidden=!o.hidden;});}
"""


def _colour(value: float) -> str:
    return f"hsl({round(min(max(value, 0.0), 1.0) * 120)},70%,85%)"  # red (0) -> green (1)


def render_html(tree: Tree, *, open_depth: int = 2) -> str:
    """One self-contained HTML page (inline CSS and JS) of every node of `tree`: action, value (printed
    and as a bar, background coloured red -> green), visits, rollouts; nodes deeper than `open_depth`
    start collapsed; the best path is outlined."""
    kids = tree.children()
    best = set(tree.best_path())
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(tree.key)}</title>",
           f"<style>{_CSS}</style><script>{_JS}</script></head><body>", f"<h1>MCTS tree {html.escape(tree.key)}</h1>",
           f"<div class='meta'>{len(tree.nodes)} nodes, {tree.simulations} simulations, root value "
           f"{tree.nodes[0].value:.3f}. Colour: value (red 0 &rarr; green 1); outlined: the best path "
           "(most visited).</div>",
           "<div><button onclick='setAll(true)'>expand all</button><button onclick='setAll(false)'>collapse all"
           "</button><button onclick='toggleObs()'>observations</button></div>",
           f"<pre class='obs'>{html.escape(tree.instruction)}</pre>"]

    def node_html(i: int) -> None:
        n = tree.nodes[i]
        rollouts = ", ".join(f"{r:g}" for r in n.rollouts)
        summary = (f"<span class='bar'><span style='width:{n.value * 100:.0f}%'></span></span>"
                   f"<span class='num'>{n.value:.3f}</span> n={n.visits} &middot; {html.escape(_label(n))}"
                   + (f" &middot; &times;{n.count}" if n.count > 1 else "")
                   + (f" &middot; rollouts [{rollouts}]" if rollouts else ""))
        style = f"background:{_colour(n.value)}"
        best_cls = " best" if i in best else ""
        obs = f"<div class='obs'>{html.escape(n.observation)}</div>" if n.parent is not None else ""
        attrs = f"data-node='{i}' data-value='{n.value:.6f}' data-visits='{n.visits}'"
        if kids[i]:
            opened = " open" if n.depth < open_depth else ""
            out.append(f"<details class='node{best_cls}' {attrs}{opened}><summary style='{style}'>{summary}</summary>"
                       f"{obs}")
            for c in sorted(kids[i], key=lambda c: (-tree.nodes[c].visits, c)):
                node_html(c)
            out.append("</details>")
        else:
            out.append(f"<div class='node leaf{best_cls}' {attrs} style='{style}'>{summary}</div>{obs}")

    node_html(0)
    out.append("</body></html>")
    return "\n".join(out)
