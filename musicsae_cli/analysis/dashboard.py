"""Static HTML pages of the feature dashboard: index.html and latents/<i>.html, opened from disk, no server.

Plain HTML with inline CSS and one small inline script (shows each clip's decoded duration once the browser
has read it); every text is escaped; images and audio are relative paths inside the output folder; nothing is
fetched from the network.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..artifacts import atomic_write_text

N_PROBES_SHOWN = 5

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em 2em; color: #222;
       max-width: 1400px; }
h1 { font-size: 1.45em; margin-bottom: 0.3em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
h3 { font-size: 1em; margin: 1.1em 0 0.3em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; vertical-align: middle; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; font-size: 0.92em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.muted { color: #777; } .note { color: #8a5a00; } .unavailable { color: #a33; font-size: 0.9em; }
nav a { margin-right: 1em; } img.thumb { height: 42px; } code { background: #f4f4f4; padding: 0 0.2em; }
audio { height: 32px; vertical-align: middle; } .duration { margin-left: 0.4em; font-size: 0.85em; color: #555; }
.lift-hi { font-weight: 600; color: #1a6b1a; }
"""

# Shows the decoded duration of each clip next to its player (and marks the element for automated checks).
SCRIPT = """
document.querySelectorAll('audio[data-clip]').forEach(function (a) {
  var label = document.getElementById(a.getAttribute('data-clip') + '-duration');
  function loaded() {
    a.setAttribute('data-decoded-duration', a.duration.toFixed(3));
    if (label) { label.textContent = a.duration.toFixed(2) + ' s'; }
  }
  function failed() {
    a.setAttribute('data-error', '1');
    if (label) { label.textContent = 'cannot play this clip'; }
  }
  a.addEventListener('loadedmetadata', loaded);
  a.addEventListener('error', failed);
  if (a.readyState >= 1) { loaded(); }
  if (a.error) { failed(); }
});
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value, digits: int = 4) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, int):
        return f"{value:,}"
    return esc(f"{value:.{digits}g}")


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_pages(stage: Path, info: dict, entries: list[dict], config: dict) -> list[str]:
    """Write index.html and latents/<i>.html into `stage`; returns the latent pages' relative paths."""
    (stage / "latents").mkdir(exist_ok=True)
    atomic_write_text(stage / "index.html", render_index(info, entries))
    names = []
    for i, entry in enumerate(entries):
        prev = entries[i - 1]["latent"] if i > 0 else None
        nxt = entries[i + 1]["latent"] if i + 1 < len(entries) else None
        name = f"latents/{entry['latent']}.html"
        atomic_write_text(stage / name, render_latent(info, entry, prev, nxt))
        names.append(name)
    return names


def _labels_text(pairs: list[dict]) -> str:
    if not pairs:
        return "<span class=\"muted\">none</span>"
    return "<br>".join(f"{esc(p['column'])}={esc(p['value'])} <span class=\"muted\">(lift {num(p['lift'], 3)}, "
                       f"{num(100 * p['p_active'], 3)}% of active frames)</span>" for p in pairs)


def _probe_text(probes: list[dict]) -> str:
    if not probes:
        return "<span class=\"muted\">&mdash;</span>"
    p = probes[0]
    cls = f"={esc(p['class'])}" if p["class"] is not None else ""
    return f"{esc(p['label'])}{cls} <span class=\"muted\">(cos {p['cosine']:+.3f})</span>"


def render_index(info: dict, entries: list[dict]) -> str:
    sel = info["selection"]
    facts = [("Store", esc(info["store"])), ("SAE", esc(info["sae"] or "(latent store)")),
             ("Hookpoint", esc(info["hookpoint"])), ("Latents", f"{num(info['width'])} "
                                                                f"({num(info['dead_latents'])} never active; "
                                                                f"mean {num(info['mean_l0'], 4)} active per frame)"),
             ("Frames analysed", num(info["n_rows"]) + (f" (where {esc(' and '.join(info['where']))})"
                                                        if info["where"] else "")),
             ("Selection", esc(sel["description"])),
             ("Label columns", esc(", ".join(info["label_columns"]) or "none"))]
    if info["probes"]:
        facts.append(("Probes", esc(", ".join(f"{p['label']} ({p['path']})" for p in info["probes"]))))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    notes = "".join(f"<p class=\"note\">{esc(n)}</p>" for n in info["probe_notes"])
    head = ("<tr><th>#</th><th>latent</th><th>density</th><th>active frames</th><th>mean when active</th>"
            "<th>max</th><th>histogram</th><th>top labels</th>" + ("<th>nearest probe</th>" if info["probes"] else "")
            + "</tr>")
    body = []
    for i, e in enumerate(entries, 1):
        link = f"latents/{e['latent']}.html"
        thumb = (f"<img class=\"thumb\" src=\"{esc(e['histogram']['png'])}\" alt=\"histogram of latent "
                 f"{e['latent']}\">") if e["histogram"].get("png") else ""
        body.append(f"<tr class=\"latent-row\"><td class=\"num\">{i}</td><td><a href=\"{esc(link)}\">latent "
                    f"{e['latent']}</a></td><td class=\"num\">{num(e['density'])}</td><td class=\"num\">"
                    f"{num(e['n_active'])}</td><td class=\"num\">{num(e['mean_active'])}</td><td class=\"num\">"
                    f"{num(e['max'])}</td><td>{thumb}</td><td>{_labels_text(e['top_labels'])}</td>"
                    + (f"<td>{_probe_text(e['probes'])}</td>" if info["probes"] else "") + "</tr>")
    html_body = (f"<h1>Feature dashboard</h1>\n<dl class=\"facts\">{dl}</dl>\n{notes}\n"
                 f"<p><img src=\"plots/density.png\" alt=\"density of all latents\"></p>\n"
                 f"<h2>Latents</h2>\n<table id=\"latents\">\n{head}\n" + "\n".join(body) + "\n</table>\n"
                 "<p class=\"muted\">density: fraction of the analysed frames on which the latent is active (&gt; 0). "
                 "Top labels: label values with lift &gt; 1 (P(value | active) / P(value)) that cover at least a "
                 "quarter of the latent's active frames. Every number is in features.json.</p>")
    return page("Feature dashboard", html_body)


def _audio_cell(e: dict, f: dict) -> str:
    a = f["audio"]
    if not a.get("file"):
        return f"<span class=\"unavailable\">audio unavailable: {esc(a.get('reason'))}</span>"
    clip = f"clip-{e['latent']}-{f['rank']}"
    return (f"<audio controls preload=\"metadata\" data-clip=\"{clip}\" src=\"../{esc(a['file'])}\"></audio>"
            f"<span class=\"duration\" id=\"{clip}-duration\">{num(a['duration_s'], 3)} s (not loaded)</span>"
            f"<br><span class=\"muted\">{num(a['start_s'], 5)}&ndash;{num(a['start_s'] + a['duration_s'], 5)} s; "
            f"frame centre at {num(a['frame_offset_s'], 3)} s of the clip</span>")


def render_latent(info: dict, e: dict, prev: int | None, nxt: int | None) -> str:
    nav = ["<a href=\"../index.html\">&larr; all latents</a>"]
    if prev is not None:
        nav.append(f"<a href=\"{prev}.html\">previous: latent {prev}</a>")
    if nxt is not None:
        nav.append(f"<a href=\"{nxt}.html\">next: latent {nxt}</a>")
    facts = [("Density", f"{num(e['density'])} ({num(e['n_active'])} of {num(info['n_rows'])} frames active)"),
             ("Mean when active", num(e["mean_active"])), ("Max", num(e["max"])),
             ("Top labels", _labels_text(e["top_labels"]))]
    for r in e.get("selected_for", []):
        facts.append(("Selected for", f"{esc(info['selection']['by_label'])}={esc(r['value'])}: mean "
                                      f"{num(r['mean_in'])} vs {num(r['mean_rest'])} elsewhere"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    hist = (f"<img src=\"../{esc(e['histogram']['png'])}\" alt=\"activation histogram\">"
            if e["histogram"].get("png") else "")
    label_cols = list(e["top_frames"][0]["labels"]) if e["top_frames"] else []
    head = ("<tr><th>rank</th><th>activation</th><th>item</th><th>frame</th><th>time (s)</th><th>source</th>"
            + "".join(f"<th>{esc(c)}</th>" for c in label_cols) + "<th>audio</th></tr>")
    rows = []
    for f in e["top_frames"]:
        src = f["source_path"]
        src_cell = f"<span title=\"{esc(src)}\">{esc(Path(src).name)}</span>" if src else "&mdash;"
        rows.append(f"<tr class=\"top-frame\"><td class=\"num\">{f['rank']}</td><td class=\"num\">{num(f['value'])}"
                    f"</td><td>{esc(f['item_id'])}</td><td class=\"num\">{f['frame']}</td><td class=\"num\">"
                    f"{num(f['time_s'], 6)}</td><td>{src_cell}</td>"
                    + "".join(f"<td>{esc(f['labels'][c])}</td>" for c in label_cols)
                    + f"<td>{_audio_cell(e, f)}</td></tr>")
    top = (f"<table id=\"top-frames\">\n{head}\n" + "\n".join(rows) + "\n</table>") if rows else \
        "<p class=\"muted\">never active on the analysed frames</p>"
    cooc = []
    for col, values in e["cooccurrence"].items():
        trs = "".join(
            f"<tr class=\"cooc\" data-column=\"{esc(col)}\" data-value=\"{esc(r['value'])}\"><td>{esc(r['value'])}</td>"
            f"<td class=\"num\">{num(r['n_frames'])}</td><td class=\"num\">{num(r['n_active'])}</td>"
            f"<td class=\"num\">{num(r['p_active'], 3)}</td><td class=\"num\">{num(r['base_rate'], 3)}</td>"
            f"<td class=\"num{' lift-hi' if (r['lift'] or 0) > 1 else ''}\">{num(r['lift'], 3)}</td>"
            f"<td class=\"num\">{num(r['mean_activation'], 3)}</td></tr>" for r in values)
        cooc.append(f"<h3>{esc(col)}</h3>\n<table class=\"cooccurrence\"><tr><th>value</th><th>frames</th>"
                    f"<th>active frames</th><th>P(value | active)</th><th>base rate P(value)</th><th>lift</th>"
                    f"<th>mean activation</th></tr>{trs}</table>")
    cooc_html = "\n".join(cooc) if cooc else "<p class=\"muted\">no label columns</p>"
    probes = ""
    if info["probes"]:
        trs = "".join(f"<tr class=\"probe\"><td>{esc(p['label'])}</td>"
                      f"<td>{esc(p['class'] if p['class'] is not None else '(regression)')}</td>"
                      f"<td class=\"num\">{p['cosine']:+.4f}</td><td class=\"muted\">{esc(p['probe'])}</td></tr>"
                      for p in e["probes"][:N_PROBES_SHOWN])
        notes = "".join(f"<p class=\"note\">{esc(n)}</p>" for n in info["probe_notes"])
        table = (f"<table id=\"probes\"><tr><th>probe label</th><th>class</th><th>cosine with the decoder direction"
                 f"</th><th>probes folder</th></tr>{trs}</table>") if trs else ""
        probes = f"<h2>Nearest probe directions at {esc(info['model_hookpoint'])}</h2>\n{table}\n{notes}"
    body = (f"<nav>{' '.join(nav)}</nav>\n<h1>Latent {e['latent']}</h1>\n<dl class=\"facts\">{dl}</dl>\n"
            f"<h2>Activation histogram</h2>\n{hist}\n<h2>Top activating frames</h2>\n{top}\n"
            f"<h2>Label co-occurrence</h2>\n<p class=\"muted\">P(value | active): share of the latent's active frames "
            f"with the value; lift = P(value | active) / P(value); mean activation over all frames with the value."
            f"</p>\n{cooc_html}\n{probes}\n<script>{SCRIPT}</script>")
    return page(f"Latent {e['latent']}", body)
