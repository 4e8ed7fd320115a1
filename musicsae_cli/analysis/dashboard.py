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
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 1.5em; color: #222;
       max-width: 1400px; }
h1 { font-size: 1.45em; margin-bottom: 0.3em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
h3 { font-size: 1em; margin: 1.1em 0 0.3em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; max-width: 100%; }
.table-wrap { max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; vertical-align: middle; }
td.wrap, .unavailable { overflow-wrap: anywhere; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; font-size: 0.92em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.muted { color: #777; } .note { color: #8a5a00; } .unavailable { color: #a33; font-size: 0.9em; }
nav a { margin-right: 1em; } img.thumb { height: 42px; } code { background: #f4f4f4; padding: 0 0.2em; }
audio { display: block; width: 240px; max-width: 100%; height: 32px; }
.duration { font-size: 0.85em; color: #555; } td.clip { width: 250px; min-width: 200px; }
td.spec { width: 310px; } img.spec { display: block; width: 300px; max-width: 100%; height: auto; }
.lift-hi { font-weight: 600; color: #1a6b1a; } .subtitle { color: #555; margin-top: 0; }
.flag { display: inline-block; background: #fff3cd; color: #6b4500; border: 1px solid #e0b44c; border-radius: 3px;
        padding: 0 0.4em; font-size: 0.8em; font-weight: 600; margin-left: 0.4em; vertical-align: middle; }
p.flag-note { background: #fff8e1; border-left: 4px solid #e0b44c; padding: 0.4em 0.7em; }
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


def subtitle(info: dict) -> str:
    """'run · hookpoint · architecture SAE' (the parts that are known), as the figures' titles name them."""
    parts = [info.get("run"), info.get("hookpoint"),
             f"{info['architecture']} SAE" if info.get("architecture") else None]
    return " &middot; ".join(esc(p) for p in parts if p)


def position_flag(e: dict) -> str:
    if not e.get("position_feature"):
        return ""
    return (f"<span class=\"flag position-flag\" title=\"every top frame sits at frame {e['position_frame']} of its "
            f"item\">position feature: frame {e['position_frame']}</span>")


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
                    f"{e['latent']}</a>{position_flag(e)}</td><td class=\"num\">{num(e['density'])}</td>"
                    "<td class=\"num\">"
                    f"{num(e['n_active'])}</td><td class=\"num\">{num(e['mean_active'])}</td><td class=\"num\">"
                    f"{num(e['max'])}</td><td>{thumb}</td><td>{_labels_text(e['top_labels'])}</td>"
                    + (f"<td>{_probe_text(e['probes'])}</td>" if info["probes"] else "") + "</tr>")
    n_position = sum(1 for e in entries if e.get("position_feature"))
    position_note = (f"<p class=\"flag-note\">{n_position} latent(s) flagged <span class=\"flag\">position "
                     "feature</span>: every top frame sits at the same frame index of its item, so the latent may "
                     "encode the position in the window rather than the sound.</p>\n") if n_position else ""
    html_body = (f"<h1>Feature dashboard</h1>\n<p class=\"subtitle\">{subtitle(info)}</p>\n"
                 f"<dl class=\"facts\">{dl}</dl>\n{notes}\n"
                 f"<p><img src=\"plots/density.png\" alt=\"density of all latents\" style=\"max-width: 100%\"></p>\n"
                 f"<h2>Latents</h2>\n{position_note}<div class=\"table-wrap\"><table id=\"latents\">\n{head}\n"
                 + "\n".join(body) + "\n</table></div>\n"
                 "<p class=\"muted\">density: fraction of the analysed frames on which the latent is active (&gt; 0). "
                 f"Top labels: label values with lift &ge; {num(info['min_lift'], 3)} (P(value | active) / "
                 f"P(value)) on at least {num(info['min_lift_frames'])} active frames that cover at least a quarter "
                 "of the latent's active frames. Every number is in features.json.</p>")
    return page("Feature dashboard", html_body)


def _audio_cell(e: dict, f: dict) -> str:
    a, roll = f["audio"], f.get("roll")
    if not a.get("file") and roll:  # a symbolic store: the notes around the event instead of audio
        src = esc(f"../{roll['file']}")
        return (f"<a href=\"{src}\"><img class=\"spec\" src=\"{src}\" width=\"300\" height=\"145\" alt=\"piano "
                f"roll of the notes around top event {f['rank']}; the red line and outline mark it\"></a><br><span "
                f"class=\"muted\">events {roll['events'][0]}&ndash;{roll['events'][1]}: {roll['notes']} notes "
                f"({esc(', '.join(roll['instruments']))})</span>"
                + (f"<br><audio controls preload=\"metadata\" src=\"../{esc(roll['audio']['file'])}\"></audio>"
                   f"<span class=\"muted\"> rendered as sine tones at {num(roll['audio']['tempo_bpm'])} bpm</span>"
                   if roll.get("audio") else ""))
    if not a.get("file"):
        return f"<span class=\"unavailable\">audio unavailable: {esc(a.get('reason'))}</span>"
    clip = f"clip-{e['latent']}-{f['rank']}"
    return (f"<audio controls preload=\"metadata\" data-clip=\"{clip}\" src=\"../{esc(a['file'])}\"></audio>"
            f"<span class=\"duration\" id=\"{clip}-duration\">{num(a['duration_s'], 3)} s (not loaded)</span>"
            f"<br><span class=\"muted\">{num(a['start_s'], 5)}&ndash;{num(a['start_s'] + a['duration_s'], 5)} s of "
            f"the source; frame centre at {num(a['frame_offset_s'], 3)} s of the clip</span>")


def _spectrogram_cell(f: dict) -> str:
    spec = f["audio"].get("spectrogram")
    if not spec:
        return "<span class=\"muted\">&mdash;</span>"
    src = esc(f"../{spec['file']}")
    return (f"<a href=\"{src}\"><img class=\"spec\" src=\"{src}\" width=\"300\" height=\"145\" alt=\"spectrogram of "
            f"the clip of top frame {f['rank']}; the shaded band marks the frame\"></a>")


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
    hist = (f"<img src=\"../{esc(e['histogram']['png'])}\" alt=\"activation histogram\" style=\"max-width: 100%\">"
            if e["histogram"].get("png") else "")
    label_cols = e.get("label_columns_shown", list(e["top_frames"][0]["labels"]) if e["top_frames"] else [])
    hidden = [c for c in info["label_columns"] if c not in label_cols]
    head = ("<tr><th>clip</th><th>spectrogram</th><th>rank</th><th>activation</th><th>item</th><th>frame</th>"
            "<th>time (s)</th><th>source</th>" + "".join(f"<th>{esc(c)}</th>" for c in label_cols) + "</tr>")
    rows = []
    for f in e["top_frames"]:
        src = f["source_path"]
        src_cell = f"<span title=\"{esc(src)}\">{esc(Path(src).name)}</span>" if src else "&mdash;"
        rows.append(f"<tr class=\"top-frame\"><td class=\"clip\">{_audio_cell(e, f)}</td>"
                    f"<td class=\"spec\">{_spectrogram_cell(f)}</td><td class=\"num\">{f['rank']}</td>"
                    f"<td class=\"num\">{num(f['value'])}</td><td class=\"wrap\">{esc(f['item_id'])}</td>"
                    f"<td class=\"num\">{f['frame']}</td><td class=\"num\">{num(f['time_s'], 6)}</td>"
                    f"<td class=\"wrap\">{src_cell}</td>"
                    + "".join(f"<td>{esc(f['labels'][c])}</td>" for c in label_cols) + "</tr>")
    hidden_note = (f"<p class=\"muted\" id=\"hidden-labels\">Not shown (missing on every top frame): "
                   f"{esc(', '.join(hidden))}.</p>") if hidden and rows else ""
    top = (f"<div class=\"table-wrap\"><table id=\"top-frames\">\n{head}\n" + "\n".join(rows)
           + f"\n</table></div>\n{hidden_note}<p class=\"muted\">Spectrogram: STFT magnitude in dB relative to the "
           "clip's loudest bin (80 dB shown); the bright band marks the frame, lighter bands the latent's other top "
           "frames inside the clip.</p>") if rows else "<p class=\"muted\">never active on the analysed frames</p>"
    cooc, quiet = [], []
    for col, values in e["cooccurrence"].items():
        listed = [r for r in values if r.get("listed", True)]
        if not listed:
            quiet.append(col)
            continue
        trs = "".join(
            f"<tr class=\"cooc\" data-column=\"{esc(col)}\" data-value=\"{esc(r['value'])}\"><td>{esc(r['value'])}</td>"
            f"<td class=\"num\">{num(r['n_frames'])}</td><td class=\"num\">{num(r['n_active'])}</td>"
            f"<td class=\"num\">{num(r['p_active'], 3)}</td><td class=\"num\">{num(r['base_rate'], 3)}</td>"
            f"<td class=\"num lift-hi\">{num(r['lift'], 3)}</td>"
            f"<td class=\"num\">{num(r['mean_activation'], 3)}</td></tr>" for r in listed)
        more = len(values) - len(listed)
        cooc.append(f"<h3>{esc(col)}</h3>\n<table class=\"cooccurrence\"><tr><th>value</th><th>frames</th>"
                    f"<th>active frames</th><th>P(value | active)</th><th>base rate P(value)</th><th>lift</th>"
                    f"<th>mean activation</th></tr>{trs}</table>"
                    + (f"<p class=\"muted\">{more} other value(s) of {esc(col)} below the threshold.</p>"
                       if more else ""))
    if quiet:
        cooc.append(f"<p class=\"muted\" id=\"no-lift\">No value with lift &ge; {num(info['min_lift'], 3)} on at "
                    f"least {num(info['min_lift_frames'])} active frames: {esc(', '.join(quiet))}.</p>")
    cooc_html = "\n".join(cooc) if cooc else "<p class=\"muted\">no label columns</p>"
    probes = ""
    if info["probes"]:
        trs = "".join(f"<tr class=\"probe\"><td>{esc(p['label'])}</td>"
                      f"<td>{esc(p['class'] if p['class'] is not None else '(regression)')}</td>"
                      f"<td class=\"num\">{p['cosine']:+.4f}</td><td class=\"muted wrap\">{esc(p['probe'])}</td></tr>"
                      for p in e["probes"][:N_PROBES_SHOWN])
        notes = "".join(f"<p class=\"note\">{esc(n)}</p>" for n in info["probe_notes"])
        table = (f"<table id=\"probes\"><tr><th>probe label</th><th>class</th><th>cosine with the decoder direction"
                 f"</th><th>probes folder</th></tr>{trs}</table>") if trs else ""
        probes = f"<h2>Nearest probe directions at {esc(info['model_hookpoint'])}</h2>\n{table}\n{notes}"
    flag = ""
    if e.get("position_feature"):
        flag = (f"<p class=\"flag-note\" id=\"position-feature\"><span class=\"flag\">position feature</span> all "
                f"{len(e['top_frames'])} top frames sit at frame {e['position_frame']} of their items: this latent "
                "may encode the position in the window rather than the sound.</p>\n")
    body = (f"<nav>{' '.join(nav)}</nav>\n<h1>Latent {e['latent']}{position_flag(e)}</h1>\n"
            f"<p class=\"subtitle\">{subtitle(info)}</p>\n{flag}<dl class=\"facts\">{dl}</dl>\n"
            f"<h2>Top activating frames</h2>\n{top}\n<h2>Activation histogram</h2>\n{hist}\n"
            f"<h2>Label co-occurrence</h2>\n<p class=\"muted\">Values with lift &ge; {num(info['min_lift'], 3)} on at "
            f"least {num(info['min_lift_frames'])} active frames (every value is in features.json). "
            f"P(value | active): share of the latent's active frames with the value; lift = P(value | active) / "
            f"P(value); mean activation over all frames with the value.</p>\n{cooc_html}\n{probes}\n"
            f"<script>{SCRIPT}</script>")
    return page(f"Latent {e['latent']}", body)
