"""The research book's pages: the build source assembled from the executed notebooks, then the HTML.

``crapnet book --profile smoke|lite|paper`` (see :mod:`crapnet_core.cli.book`) calls
:func:`crapnet_core.book.driver.build_book`, which

1. makes a :class:`~crapnet_core.book.plan.BookPlan` for the profile
   (:func:`crapnet_core.book.plan.plan_book`): which notebook runs with which parameters (one
   executed copy per dataset / fold / setting / method / ablation point), and what the profile
   leaves out (listed in the book);
2. runs the study's Snakemake workflow (``workflow/Snakefile``, steps and content keys in
   :mod:`crapnet_core.book.workflow`, job bodies in :mod:`crapnet_core.book.jobs`) on that plan: superpixels per scan, one job per training
   run and per evaluation, one papermill execution per notebook page
   (:func:`crapnet_core.book.execute.execute_notebook`), then the HTML build. Snakemake schedules
   them (``--jobs N``, one GPU per training, or one SLURM job each), reuses completed work and
   re-runs what a changed notebook, parameter or library file affects;
3. the last job assembles a build-source tree from the committed ``_config.yml``/``_toc.yml``,
   ``book/*.md`` and the executed notebooks (:func:`assemble_source`, this module), with the toc's
   ``notebooks/<name>`` entries replaced by the executed copies, and
4. runs the jupyter-book (Sphinx) build on it with notebook execution off
   (:func:`build_html`); ``build_book`` returns the path of ``index.html``.

Layout under the output folder ``OUT`` (default ``<repo>/_build``, ignored by git)::

    OUT/notebooks/<name>__<slug>.ipynb   executed copies (kept, also when they fail)
    OUT/logs/<name>__<slug>.log          papermill log of each execution (cell outputs)
    OUT/logs/<name>__<slug>.params.yaml  the parameters it ran with
    OUT/logs/sphinx.log                  the jupyter-book build log
    OUT/logs/{train,evaluate,superpixels}/  per-job logs of the other steps
    OUT/logs/snakemake.log               Snakemake's own messages (progress, errors)
    OUT/logs/failed/<job>.txt            what failed, written by the failing job
    OUT/plan.json                        the plan the workflow ran
    OUT/.snakemake/                      Snakemake's records (what ran with which keys)
    OUT/source/                          the assembled build source (rewritten each build)
    OUT/html/index.html                  the book
    OUT/book.json                        the plan, per-job status and wall times
    OUT/screenshots/                     browser check (make e2e: tests/e2e/browser_check.py)

Training runs go to ``<repo>/runs`` (``--runs``), shared through
``crapnet_core.engine.runs.ensure_run`` (keyed by config hash), so a re-run of the book or a
notebook run by hand reuses them.

Each executed copy carries ``crapnet_book`` metadata (status, parameters, wall time, host);
whether it is up to date is Snakemake's decision (its recorded content key).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.environment import environment  # packages, CPU kernels, threads of the build
from ..facts import DATASET_TITLES
from ..io import read_json, write_text
from ..paths import repo_root
from ..report.provenance import machine_description  # provenance line (report layer)
from .execute import JobResult
from .plan import BookError, BookPlan

LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- assemble + build
def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except yaml.YAMLError as err:
        raise BookError(f"{path}: not valid YAML ({err})") from None


def expand_toc(
    toc: dict, copies: dict[str, list[str]], extra_after: dict[str, list[str]] | None = None
) -> tuple[dict, list[str]]:
    """The committed toc with each ``notebooks/<stem>`` entry replaced by its executed copies.

    ``copies`` maps a notebook stem to the build-source paths (no suffix) of its executed
    copies: one entry per copy, in order, in the place of the original; the original's own
    ``sections`` stay with the first copy. A notebook without copies is dropped (returned in
    the second value). ``extra_after`` inserts further entries after a given file.
    """
    toc = copy.deepcopy(toc)
    dropped: list[str] = []
    extra_after = extra_after or {}

    def expand(entries: list) -> list:
        out = []
        for entry in entries:
            entry = dict(entry)
            for key in ("sections", "chapters", "parts"):
                if key in entry:
                    entry[key] = expand(entry[key])
                    if key == "sections" and not entry[key]:
                        del entry[key]
            target = entry.get("file")
            stem = Path(target).name if target and str(target).startswith("notebooks/") else None
            stem = stem[:-6] if stem and stem.endswith(".ipynb") else stem
            if stem is not None:
                paths = copies.get(stem, [])
                if not paths:
                    dropped.append(stem)
                    out.extend(entry.get("sections", []))
                    continue
                first = dict(entry, file=paths[0])
                out.append(first)
                out.extend({"file": p} for p in paths[1:])
            else:
                out.append(entry)
            if target in extra_after:
                out.extend({"file": p} for p in extra_after[target])
        return out

    for key in ("parts", "chapters", "sections"):
        if key in toc:
            toc[key] = expand(toc[key])
    return toc, dropped


def prune_missing(toc: dict, src: Path) -> tuple[dict, list[str]]:
    """Drop toc entries (not the root) whose page is missing under ``src``; their sections move up."""
    toc = copy.deepcopy(toc)
    missing: list[str] = []

    def exists(name: str) -> bool:
        base = src / name
        return any(
            base.with_name(base.name + ext).is_file() or (base.suffix and base.is_file())
            for ext in (".md", ".ipynb", "")
        )

    def prune(entries: list) -> list:
        out = []
        for entry in entries:
            entry = dict(entry)
            for key in ("sections", "chapters", "parts"):
                if key in entry:
                    entry[key] = prune(entry[key])
            if "file" in entry and not exists(entry["file"]):
                missing.append(entry["file"])
                out.extend(entry.get("sections", []))
                continue
            out.append(entry)
        return out

    for key in ("parts", "chapters", "sections"):
        if key in toc:
            toc[key] = prune(toc[key])
    return toc, missing


def toc_files(toc: dict) -> list[str]:
    """Every ``file`` of a jupyter-book toc (root first), in reading order."""
    files = [toc["root"]] if "root" in toc else []

    def walk(entries: list) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key, []))
    return files


def _retitle(nb: dict, title: str) -> dict:
    """Append `` — <title>`` to the notebook's first Markdown heading (the page title)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = "".join(cell.get("source", ""))
        lines = src.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# "):
                lines[i] = f"{line.rstrip()} — {title}"
                cell["source"] = "\n".join(lines)
                return nb
        break
    return nb


def _collapse_default_parameters(nb: dict) -> dict:
    """Collapse (``hide-input``) the template's parameters cell when papermill injected the values used."""
    cells = nb.get("cells", [])
    if any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
        for cell in cells:
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "parameters" in tags and "hide-input" not in tags:
                tags.append("hide-input")
    return nb


#: Parts of MathJax 2.7 needed for TeX input rendered as CommonHTML.
_MATHJAX_PARTS = (
    "MathJax.js",
    "config/TeX-AMS_CHTML.js",
    "extensions",
    "jax/element",
    "jax/input/TeX",
    "jax/output/CommonHTML",
    "fonts/HTML-CSS/TeX/woff",
    "localization/en",
)


def _local_mathjax() -> Path | None:
    """Debian/Ubuntu ``libjs-mathjax`` (MathJax 2.7), if installed: math renders offline."""
    path = Path("/usr/share/javascript/mathjax/MathJax.js")
    return path if path.is_file() else None


def environment_md(env: dict[str, Any] | None, rerun: dict[str, Any] | None = None) -> list[str]:
    """The "Environment" section of the This build page: the packages, CPU kernels and threads of
    this build (:func:`crapnet_core.engine.environment.environment`), and the committed rerun
    check's spread when ``rerun`` (``results/rerun_check/rerun_check.json``) is given."""
    from ..engine.environment import NUMERIC_PACKAGES

    lines = ["## Environment", ""]
    if not env:
        return lines + ["Not recorded.", ""]
    cpu, threads, build = env.get("cpu", {}), env.get("threads", {}), env.get("torch_build", {})
    packages = env.get("packages", {})
    lines += [
        "What computed this build's numbers beside the code and the configs (every training run also "
        "records its own in `RUN/environment.json`): the versions of the numeric packages, the CPU's "
        "instruction sets (oneDNN, MKL and torch choose their kernels from them), the threads and the device.",
        "",
        "| | |",
        "|---|---|",
        f"| Python | {env.get('python')} |",
        *[f"| {name} | {packages.get(name) or 'not installed'} |" for name in NUMERIC_PACKAGES],
        f"| CPU | {cpu.get('model')} ({cpu.get('vendor')}, family/model/stepping {cpu.get('family_model_stepping')}) |",
        f"| instruction sets | {', '.join(cpu.get('flags') or []) or 'not readable'} |",
        f"| torch CPU kernels | {cpu.get('torch_capability')}; oneDNN {build.get('onednn')}, MKL {build.get('mkl')} |",
        f"| threads | torch {threads.get('torch_intra_op')} intra-op, {threads.get('torch_inter_op')} inter-op; "
        f"{', '.join(f'{k}={v}' for k, v in (threads.get('env') or {}).items()) or 'no thread variables set'} |",
        f"| deterministic algorithms | {env.get('deterministic')} (training always: `train.deterministic`) |",
        f"| device | {(env.get('device') or {}).get('name') or (env.get('device') or {}).get('type')} |",
        "",
    ]
    if rerun and rerun.get("spread"):
        sp = rerun["spread"]
        lines += [
            f"**Rerun check** (`results/rerun_check/`, {rerun.get('machine')}): {sp['n']} committed fold(s) "
            f"trained again with their exact configs; the fold-mean Dice moved by {100 * sp['mean_abs_difference']:.2f} "
            f"points on average (largest {100 * sp['max_abs_difference']:.2f}); {sp['identical']} of {sp['n']} "
            "identical. The same command on the same machine gives the same weights bit for bit; on another CPU "
            "expect differences of this size.",
            "",
        ]
    return lines


def _rerun_check(results_dir: str | None) -> dict[str, Any] | None:
    """The committed rerun check (``results/rerun_check/rerun_check.json``), None when absent."""
    path = Path(results_dir or "") / "rerun_check" / "rerun_check.json"
    if not results_dir or not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError:
        LOG.warning("book: %s is not valid JSON; the rerun check is left off the This build page", path)
        return None


def build_info_page(
    plan: BookPlan,
    results: Sequence[JobResult],
    pages: dict[str, str],
    when: str,
    machine: str,
    env: dict[str, Any] | None = None,
    rerun: dict[str, Any] | None = None,
) -> str:
    """Markdown of the generated "This build" page: profile, data, machine, environment
    (:func:`environment_md`), executions, left out."""
    lines = [
        "# This build",
        "",
        "This page is generated by `crapnet book`; it says what produced the numbers in this copy of the book.",
        "",
        f"- **Profile:** `{plan.profile}` (command: `crapnet book --profile {plan.profile}`)",
        "- **Data:** "
        + ", ".join(DATASET_TITLES.get(d, d) for d in plan.datasets)
        + (f" from `{plan.data_root}`" if plan.data_root and "phantom" not in plan.datasets else ""),
        f"- **Machine:** {machine}",
        f"- **Built:** {when}",
        f"- **Training runs:** `{plan.runs_root}`",
        "",
    ]
    if "phantom" in plan.datasets:
        lines += [
            ":::{warning}",
            "This build ran on the **synthetic phantom**, not on patient data: its numbers only show that the "
            "pipeline works end to end and say nothing about how the methods segment real organs.",
            ":::",
            "",
        ]
    for note in plan.notes:
        lines += [f"{note}", ""]
    lines += environment_md(env, rerun)
    lines += ["## Left out by this profile", ""]
    lines += [f"- {item}" for item in plan.left_out] or ["- nothing"]
    lines += [
        "",
        "## Notebook executions",
        "",
        "Each notebook page of this book is one papermill execution with these parameters (wall time of the "
        "execution, including the training it waited for).",
        "",
        "| page | parameters | status | wall time (s) |",
        "|---|---|---|---|",
    ]
    for r in results:
        shown = {k: v for k, v in r.job.params.items() if k != "profile" and v is not None}
        page = pages.get(r.job.name)
        link = f"[{r.job.notebook}: {r.job.title}]({page}.ipynb)" if page else r.job.name
        wall = f"{r.wall_s:.0f}" if r.status in ("ok", "cached") and r.wall_s else ""
        status = {"ok": "executed", "cached": "reused (executed by an earlier build)"}.get(r.status, r.status)
        lines.append(f"| {link} | `{json.dumps(shown, sort_keys=True)}` | {status} | {wall} |")
    lines.append("")
    return "\n".join(lines)


#: Generated page inserted after ``book/reproduce`` in the build's toc.
BUILD_PAGE = "book/this_build"
#: Generated findings (included by ``book/intro.md``) and their figure, under the build source's book/.
FINDINGS_PAGE = "_findings.md"
FINDINGS_FIGURE = "_findings.png"


def path_replacements(plan: BookPlan, root: Path, out_dir: Path) -> list[tuple[str, str]]:
    """(absolute path, what the book shows instead) for every folder of the building machine.

    The data root becomes ``$CRAPNET_DATA_ROOT``, the runs/results/output folders and the
    repository become repository-relative names, the cache ``$CRAPNET_CACHE``, the Python
    installation ``<python>``, the home folder ``~`` and the temporary folder ``<tmp>``.
    Longest first, so that the most specific path wins.
    """
    import tempfile

    from ..paths import cache_dir

    def rel(path: str | None, fallback: str) -> str:
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix() if path else fallback
        except ValueError:
            return fallback

    pairs = {
        plan.data_root: "$CRAPNET_DATA_ROOT",
        plan.runs_root: rel(plan.runs_root, "<runs>"),
        plan.results_dir: rel(plan.results_dir, "<results>"),
        str(out_dir): rel(str(out_dir), "<build>"),
        str(cache_dir()): "$CRAPNET_CACHE",
        str(root): ".",
        sys.prefix: "<python>",
        sys.base_prefix: "<python>",
        str(Path.home()): "~",
        tempfile.gettempdir(): "<tmp>",
    }
    out: list[tuple[str, str]] = []
    for path, shown in pairs.items():
        if not path or len(str(path)) < 2:
            continue
        for variant in {str(path), str(Path(path).resolve())}:
            out.append((variant.rstrip("/"), shown))
    return sorted(set(out), key=lambda p: -len(p[0]))


def relativise(obj: Any, replacements: Sequence[tuple[str, str]]) -> Any:
    """``obj`` (a string or a notebook's JSON) with every absolute path of ``replacements`` replaced.

    Walks dicts and lists; leaves ``image/*`` payloads (base64) alone. Used on the executed
    notebooks (sources, outputs, metadata: the HTML and the downloadable .ipynb) and on the
    generated pages, so that no folder of the building machine reaches the book.
    """
    if isinstance(obj, str):
        for path, shown in replacements:
            if path in obj:
                obj = obj.replace(path, shown)
        return obj
    if isinstance(obj, list):
        return [relativise(v, replacements) for v in obj]
    if isinstance(obj, dict):
        return {k: v if str(k).startswith("image/") else relativise(v, replacements) for k, v in obj.items()}
    return obj


def assemble_source(
    plan: BookPlan, results: Sequence[JobResult], out_dir: str | os.PathLike, root: Path | None = None
) -> Path:
    """Write ``OUT/source``: committed config, toc expanded to the executed copies, pages, notebooks."""
    import yaml

    root = root or repo_root()
    out_dir = Path(out_dir)
    src = out_dir / "source"
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    shutil.copytree(root / "book", src / "book")
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    replacements = path_replacements(plan, root, out_dir)
    static = root / "book" / "_static"
    if static.is_dir():  # the book's stylesheet (jupyter-book adds every .css under _static to each page)
        shutil.copytree(static, src / "_static", dirs_exist_ok=True)

    # executed copies -> source/notebooks/<name>.ipynb, retitled
    copies: dict[str, list[str]] = {}
    pages: dict[str, str] = {}
    for r in results:
        if r.status not in ("ok", "cached"):
            continue
        nb = json.loads(r.path.read_text())
        if len([x for x in results if x.job.notebook == r.job.notebook]) > 1:
            _retitle(nb, r.job.title)
        _collapse_default_parameters(nb)
        nb = relativise(nb, replacements)
        dest = src / "notebooks" / f"{r.job.name}.ipynb"
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
        copies.setdefault(r.job.notebook, []).append(f"notebooks/{r.job.name}")
        pages[r.job.name] = f"../notebooks/{r.job.name}"

    toc = _load_yaml(root / "_toc.yml")
    toc, dropped = expand_toc(toc, copies, {"book/reproduce": [BUILD_PAGE]})
    if BUILD_PAGE not in toc_files(toc):
        toc.setdefault("chapters", toc.get("chapters", []))
        if "parts" in toc:
            toc["parts"][-1].setdefault("chapters", []).append({"file": BUILD_PAGE})
        else:
            toc["chapters"].append({"file": BUILD_PAGE})
    write_text(src / f"{BUILD_PAGE}.md", "# This build\n")  # written in full below
    toc, missing = prune_missing(toc, src)
    plan_for_page = copy.deepcopy(plan)
    for stem in dropped:
        plan_for_page.left_out.append(f"Notebook {stem}: not executed by this profile.")
    for page in missing:
        LOG.warning("book: page %s in _toc.yml is missing from the checkout; left out of the build", page)
        plan_for_page.left_out.append(f"Page {page}: listed in _toc.yml but missing from this checkout.")
    write_text(
        src / f"{BUILD_PAGE}.md",
        relativise(
            build_info_page(
                plan_for_page, results, pages, when, machine, environment(), _rerun_check(plan.results_dir)
            ),
            replacements,
        ),
    )
    # the opening page's findings: numbers from results/ at build time, linked to the results page
    from ..report.findings import findings_figure, findings_md

    results_pages = [p for name, p in pages.items() if name.startswith("06_results__")]
    findings_figure(plan.results_dir, src / "book" / FINDINGS_FIGURE)
    write_text(
        src / "book" / FINDINGS_PAGE,
        findings_md(
            plan.results_dir,
            f"{results_pages[0]}.ipynb" if results_pages else None,
            FINDINGS_FIGURE,
            folder_label=relativise(plan.results_dir, replacements),
        ),
    )
    write_text(src / "_toc.yml", yaml.safe_dump(toc, sort_keys=False))

    config = _load_yaml(root / "_config.yml") or {}
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # papermill ran them
    config["only_build_toc_files"] = True
    html = config.setdefault("html", {})
    footer = f"Profile <code>{plan.profile}</code> · {', '.join(DATASET_TITLES.get(d, d) for d in plan.datasets)} · built {when}"
    html["extra_footer"] = (html.get("extra_footer") or "") + footer
    sphinx_cfg = config.setdefault("sphinx", {}).setdefault("config", {})
    mj = _local_mathjax()
    if mj is not None:
        # MathJax 2.7 from the system package, copied into the book: math renders offline.
        # Only what the TeX input + CommonHTML output needs (~1.5 MB of the package's 60 MB).
        # Not under _static: jupyter-book would add every .js file there to every page.
        dest = src / "_extra" / "mathjax"
        for part in _MATHJAX_PARTS:
            origin = mj.parent / part
            if origin.is_dir():
                shutil.copytree(origin, dest / part, dirs_exist_ok=True)
            elif origin.is_file():
                (dest / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest / part)
        sphinx_cfg["html_extra_path"] = ["_extra"]  # copied to html/mathjax as they are
        sphinx_cfg["mathjax_path"] = "../mathjax/MathJax.js?config=TeX-AMS_CHTML"  # relative to _static
        # Debian's combined config preloads the TeX input and CommonHTML output but does not
        # switch them on: say so explicitly (MathJax 2 configuration, written before MathJax.js).
        sphinx_cfg["mathjax2_config"] = {
            "jax": ["input/TeX", "output/CommonHTML"],
            "extensions": ["tex2jax.js", "MathMenu.js", "MathZoom.js"],
            "TeX": {"extensions": ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]},
            "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True},
            "messageStyle": "none",
        }
        sphinx_cfg["myst_update_mathjax"] = False  # its MathJax-3 configuration would confuse MathJax 2
    else:
        LOG.warning(
            "book: no local MathJax (Debian/Ubuntu package libjs-mathjax): pages with equations "
            "load MathJax from its CDN when viewed, and show TeX source offline"
        )
    write_text(src / "_config.yml", yaml.safe_dump(config, sort_keys=False))
    return src


def build_html(source: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, list[str]]:
    """Run the jupyter-book (Sphinx) HTML build of ``source`` into ``OUT/html``.

    Runs in a subprocess (Sphinx keeps global state), logs to ``OUT/logs/sphinx.log`` and
    returns (index.html, warning lines). A failed build raises :class:`BookError` with the
    log's tail.
    """
    source, out_dir = Path(source).resolve(), Path(out_dir).resolve()
    html = out_dir / "html"
    doctrees = out_dir / ".doctrees"
    log_path = out_dir / "logs" / "sphinx.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (html, doctrees):  # pages of an earlier build (another profile) must not linger
        if stale.exists():
            shutil.rmtree(stale)
    cmd = [sys.executable, "-m", "crapnet_core.book.build", "_sphinx", str(source), str(html), str(doctrees)]
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    text = log_path.read_text(errors="replace")
    warnings = [ln for ln in text.splitlines() if "WARNING" in ln or "ERROR" in ln]
    index = html / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = "\n    ".join(text.strip().splitlines()[-20:])
        raise BookError(
            f"jupyter-book build of {source} failed (status {proc.returncode}); log {log_path}:\n    {tail}"
        )
    return index, warnings


def _sphinx_main(source: str, html: str, doctrees: str) -> int:
    """Entry of the build subprocess: jupyter-book's Sphinx build with its config handling."""
    from jupyter_book.sphinx import build_sphinx

    # the same call as `jupyter-book build SOURCE` makes, with our own output folders
    overrides = {"external_toc_path": (Path(source) / "_toc.yml").as_posix(), "latex_individualpages": False}
    result = build_sphinx(
        source,
        html,
        doctreedir=doctrees,
        path_config=str(Path(source) / "_config.yml"),
        use_external_toc=True,
        noconfig=True,
        confoverrides=overrides,
        freshenv=True,
        builder="html",
        keep_going=True,
    )
    if isinstance(result, Exception):
        raise result
    return int(result or 0)


if __name__ == "__main__":  # build subprocess: python -m crapnet_core.book.build _sphinx SRC HTML DOCTREES
    if len(sys.argv) == 5 and sys.argv[1] == "_sphinx":
        sys.exit(_sphinx_main(*sys.argv[2:]))
    print("usage: crapnet book --profile smoke|lite|paper (this module's own entry is internal)", file=sys.stderr)
    sys.exit(2)
