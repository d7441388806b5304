"""``fcnseg explain``: run every measurement and write ``report.md``, its PNG figures and ``results.json``.

Each section opens with the paper's claim in one sentence, then the table or figure computed by
this run, then one sentence on what it shows. Nothing in the report is typed in.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fcnseg.errors import ConfigError
from fcnseg.ideas import figures
from fcnseg.ideas import patchwise as pw
from fcnseg.ideas import shift_stitch as ss
from fcnseg.ideas.classifiers import CLASSIFIER_NAMES, build_classifier
from fcnseg.ideas.costs import human_flops
from fcnseg.ideas.receptive import fcn_geometry, layer_table
from fcnseg.ideas.upsampling import load_models, train_staged, upsampling_view
from fcnseg.files import atomic_write_text, format_bytes, write_json

log = logging.getLogger(__name__)

DEFAULT_SIZE = {"small": 384, "small-padded": 384, "alexnet": 500, "vgg16": 384}  # pixels


@dataclass
class ExplainOptions:
    """Settings of one report; the defaults run in under two minutes on two CPU cores."""

    out_dir: str = "runs/explain"
    arch: str = "small"  # small | small-padded | alexnet | vgg16: the patch classifier studied
    size: int | None = None  # image side, pixels (None: DEFAULT_SIZE[arch])
    batch_size: int = 16  # windows per patch-wise batch
    repeats: int = 2  # timed runs per method (median), after one warm-up run
    stitch_size: int = 320  # image side for shift-and-stitch, pixels
    stitch_factor: int = 4  # subsampling undone by shift-and-stitch (f^2 shifted runs)
    checkpoints: list[str] = field(default_factory=list)  # FCN checkpoints for the upsampling view
    image: str | None = None  # RGB image for the upsampling view (default: a synthetic scene)
    train_seconds: float = 35.0  # training budget when no checkpoint is given (0: untrained view)
    scaling_points: int = 9  # image sizes in the cost-scaling plot
    seed: int = 0
    progress: bool = True

    def validate(self) -> "ExplainOptions":
        if self.arch not in CLASSIFIER_NAMES:
            raise ConfigError(f"explain: --arch {self.arch!r} is not one of {', '.join(CLASSIFIER_NAMES)}")
        f = self.stitch_factor
        if f < 1 or f > 32 or f & (f - 1):
            raise ConfigError(f"explain: --stitch-factor must be a power of two from 1 to 32, got {f}")
        if self.scaling_points < 2:
            raise ConfigError(f"explain: --scaling-points must be at least 2, got {self.scaling_points}")
        if self.size is not None and self.size < 32:
            raise ConfigError(f"explain: --size must be at least 32 pixels, got {self.size}")
        for path in self.checkpoints:
            if not Path(path).is_file():
                raise ConfigError(f"explain: checkpoint {path} not found")
        if self.image is not None and not Path(self.image).is_file():
            raise ConfigError(f"explain: image {self.image} not found")
        return self


def _fmt_s(seconds: float | None) -> str:
    return "-" if seconds is None else (f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s")


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.1f}x"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _start_for_factor(net, factor: int) -> int:
    """Index of the layer from which the strides multiply to ``factor`` (the last subsampling layers)."""
    strides = [(i, ss._stride(m)) for i, m in enumerate(net.children()) if ss._stride(m) > 1]
    product = 1
    for i, s in reversed(strides):
        product *= s
        if product == factor:
            return i
    raise ConfigError(f"explain: no run of final layers subsamples by exactly {factor} in this net")


# --------------------------------------------------------------------------------------------- sections


def patchwise_section(opts: ExplainOptions, out: Path, results: dict) -> tuple[str, dict]:
    size = opts.size or DEFAULT_SIZE[opts.arch]
    classifier = build_classifier(opts.arch, opts.seed)
    comparisons = [pw.compare(classifier, size, batch_size=opts.batch_size, repeats=opts.repeats, seed=opts.seed)]
    if opts.arch == "small":  # the padded twin: how far the maps differ, and why
        twin = build_classifier("small-padded", opts.seed)
        comparisons.append(pw.compare(twin, size, batch_size=opts.batch_size, repeats=opts.repeats, seed=opts.seed))
    main = comparisons[0]
    g = main.grid
    log.info("patch-wise vs dense: %s speed-up %.1fx", opts.arch, main.speedup or 0)

    # Cost against image size: FLOPs and memory counted for every size, time measured on a few.
    step = g.stride * max(1, (size - g.window) // (3 * g.stride))
    sizes = sorted({g.window + k * step for k in range(opts.scaling_points)} | {size})
    below = [s for s in sizes if s <= size]
    timed = [below[0], size] if opts.arch in ("alexnet", "vgg16") else sorted({below[0], below[len(below) // 2], size})
    scaling = pw.cost_scaling(classifier, sizes, timed_sizes=timed, batch_size=opts.batch_size, repeats=opts.repeats)
    fig_cost = figures.cost_scaling(scaling, g.window, g.stride, classifier.description.split(",")[0], out / "cost_scaling.png")
    fig_diff = figures.score_difference(comparisons, out / "patchwise_difference.png")

    rows = []
    for c in comparisons:
        rows.append([
            f"`{c.classifier}`", f"{c.grid.rows}x{c.grid.cols} = {c.grid.count}", f"{c.grid.window}", f"{c.grid.receptive_field}",
            f"{c.max_abs_diff:.2e} ({c.relative_diff:.1e} of max)", f"{c.argmax_agreement:.0%}",
            _fmt_s(c.patchwise.seconds), _fmt_s(c.dense.seconds), _ratio(c.patchwise.seconds, c.dense.seconds),
            human_flops(c.patchwise.flops), human_flops(c.dense.flops), _ratio(c.patchwise.flops, c.dense.flops),
            format_bytes(c.patchwise.peak_bytes), format_bytes(c.dense.peak_bytes), _ratio(c.patchwise.peak_bytes, c.dense.peak_bytes),
        ])
    table = _table(
        ["classifier", "windows", "window px", "dense RF px", "max abs diff", "same top class",
         "time patch-wise", "time dense", "speed-up", "FLOPs patch-wise", "FLOPs dense", "FLOP ratio",
         "peak mem patch-wise", "peak mem dense", "memory ratio"],
        rows,
    )
    scale_rows = [
        [p.size, p.windows, human_flops(p.patchwise.flops), human_flops(p.dense.flops), _ratio(p.patchwise.flops, p.dense.flops),
         format_bytes(p.patchwise.peak_bytes), format_bytes(p.dense.peak_bytes), _fmt_s(p.patchwise.seconds), _fmt_s(p.dense.seconds)]
        for p in scaling
    ]
    scale_table = _table(["image side", "windows", "FLOPs patch-wise", "FLOPs dense", "ratio", "mem patch-wise", "mem dense",
                          "time patch-wise", "time dense"], scale_rows)

    why = []
    for c in comparisons:
        if c.classifier == "small":
            why.append(
                f"`small` has no padded convolution, so each dense output is *exactly* the classifier on its {c.grid.window}x"
                f"{c.grid.window} window: the maps agree to float32 rounding ({c.max_abs_diff:.1e})."
            )
        else:
            why.append(
                f"`{c.classifier}` pads its convolutions: the patch-wise classifier pads zeros at every window's own border, "
                f"while the dense net sees the true neighbouring pixels there (one dense output depends on "
                f"{c.grid.receptive_field}x{c.grid.receptive_field} pixels, not {c.grid.window}x{c.grid.window}), so the maps differ by up to "
                f"{c.relative_diff:.1%} of the largest score; least in the grid's outer rows and columns, where the dense net "
                f"meets zero padding too (at the image border); "
                f"the top class agrees on {c.argmax_agreement:.0%} of the cells (random weights)."
            )
    extra = ""
    if main.grid.extent()[0] > size:
        extra = (f"\n\nThe dense grid's last row and column come from ceil-mode pooling that reaches past the image; "
                 f"for those windows the image is zero-padded to {main.grid.extent()[0]} px.")
    text = f"""## 1. Patch-wise classification vs one convolutionalized pass

**Paper (sections 3.1, 4.1):** a convolutionalized classifier computes the scores of all windows in one pass, sharing the
overlapping convolutions, whereas patch-wise inference repeats them for every window: "AlexNet takes 1.2 ms to infer the
classification scores of a 227x227 image, the fully convolutional net takes 22 ms to produce a 10x10 grid of outputs from a
500x500 image, which is more than 5 times faster than the naive approach" (`--arch alexnet --size 500` reproduces this case;
here the naive approach is batched, which only helps it).

Classifier: {classifier.description}; random weights. Image {size}x{size}; the dense output grid is {g.rows}x{g.cols} at stride {g.stride},
so the classifier is run on exactly those {g.count} windows ({g.window}x{g.window}, top-left of window (i, j) at
({g.offset} + {g.stride} i, {g.offset} + {g.stride} j), found from the receptive-field geometry), {opts.batch_size} windows per batch.
Time: median of {opts.repeats} runs after a warm-up, the two methods interleaved. FLOPs: `torch.utils.flop_counter`.
Peak memory: the largest total of live tensor storages (the window stack included, weights excluded).

{table}

![where the maps differ]({fig_diff})

{' '.join(why)}{extra}

**Cost as the image grows** (FLOPs and memory counted for every size, wall time measured on {', '.join(map(str, timed))} px):

![cost scaling]({fig_cost})

{scale_table}

The dense cost grows with the image area; the patch-wise cost grows with the number of windows times the cost of one window,
so the gap widens with the image: at {scaling[-1].size} px the patch-wise net needs {_ratio(scaling[-1].patchwise.flops, scaling[-1].dense.flops)} the FLOPs.
"""
    summary = {
        "arch": opts.arch, "size": size, "grid": f"{g.rows}x{g.cols}", "windows": g.count,
        "max_abs_diff": main.max_abs_diff, "relative_diff": main.relative_diff,
        "patchwise_seconds": main.patchwise.seconds, "dense_seconds": main.dense.seconds, "speedup": main.speedup,
        "flop_ratio": main.patchwise.flops / main.dense.flops, "memory_ratio": main.patchwise.peak_bytes / main.dense.peak_bytes,
    }
    results["patchwise"] = [
        {**{k: v for k, v in asdict(c).items() if k != "diff_map"}, "speedup": c.speedup, "relative_diff": c.relative_diff}
        for c in comparisons
    ]
    results["scaling"] = [asdict(p) for p in scaling]
    return text, {"main": summary, "comparisons": comparisons, "classifier": classifier}


def fc_conv_section(classifier) -> tuple[str, dict]:
    r = pw.fc_to_conv(classifier)
    rows = [[layer["name"], f"Linear `{layer['linear']}`", f"Conv2d `{layer['conv']}`"] for layer in r["layers"]]
    text = f"""## 2. Fully connected layers are convolutions

**Paper (section 3.1):** fully connected layers "can also be viewed as convolutions with kernels that cover their entire input
regions", so a classifier becomes a net that takes input of any size and outputs a spatial map.

`fcnseg.models.surgery.convolutionalize` reshapes each Linear weight of `{classifier.name}` into a convolution:

{_table(["layer", "before", "after"], rows)}

On {classifier.window}x{classifier.window} windows the classifier gives logits `{r['logits_shape']}` and the convolutionalized net
score maps `{r['scores_shape']}`; the largest difference is {r['max_abs_diff']:.1e} (largest logit {r['max_abs_score']:.2e}):
the same function, only the weights' shape changed.
"""
    return text, r


def receptive_section(classifier, dense_net) -> tuple[str, dict]:
    backbone = classifier.backbone
    geo = fcn_geometry(backbone)
    cls_rows = [
        [r.name, r.kind, r.kernel, r.stride, r.pad, r.receptive_field, r.output_stride, f"{r.centre:g}"]
        for r in layer_table(dense_net.named_children())
    ]
    fcn_rows = [
        [r.name, r.kind, r.kernel, r.stride, r.pad, r.receptive_field, r.output_stride, f"{r.centre:g}"] for r in geo["layers"]
    ]
    crop_rows = [[c.arch, f"`{c.crop}`", f"`{c.bigger}` (shift {c.bigger_shift:g})", f"`{c.reference}` (shift {c.reference_shift:g})",
                  f"**{c.offset}**"] for c in geo["crops"]]
    header = ["layer", "kind", "kernel", "stride", "pad", "receptive field px", "output stride px", "centre of output 0 (px)"]
    text = f"""## 3. Receptive fields, output stride and crop offsets

**Paper (sections 3.1, 4.1):** "locations in higher layers correspond to the locations in the image they are path-connected to,
which are called their receptive fields"; the net's output stride sets the coarseness of its output, and the reference nets
pad the first convolution by 100 and crop the upsampled maps back into alignment.

Convolutionalized `{classifier.name}` classifier (layer index as name): the last receptive field is what one dense output sees.

{_table(header, cls_rows)}

FCN trunk `{backbone}` with pad {geo['pad']} (as `fcnseg.models.build_model` builds it):

{_table(header, fcn_rows)}

Each crop aligns two maps whose coordinates are `out = scale * in + shift` (Caffe's `coord_map`); the offset is the shift
difference, and these are the offsets `FCN.offsets` uses:

{_table(["net", "crop", "cropped map", "aligned with", "offset"], crop_rows)}

All numbers above are computed from the modules by `fcnseg.models.geometry`; for VGG16 they give the reference nets' 19 (32s),
5/27 (16s) and 5/9/31 (8s).
"""
    return text, {"classifier_layers": [asdict(r) for r in layer_table(dense_net.named_children())],
                  "fcn_layers": [asdict(r) for r in geo["layers"]], "crops": [asdict(c) for c in geo["crops"]]}


def upsampling_section(opts: ExplainOptions, out: Path) -> tuple[str, dict]:
    from fcnseg.data.synthetic import generate_sample, style_of_classes

    if opts.checkpoints:
        trained = load_models(opts.checkpoints)
        how = f"from {', '.join(f'`{p}`' for p in opts.checkpoints)}"
    else:
        trained = train_staged(opts.train_seconds, seed=opts.seed, progress=opts.progress)
        steps = ", ".join(f"{a} {trained.steps[a]} steps ({trained.seconds[a]:.0f} s, last loss {trained.final_loss[a]:.2f})"
                          for a in trained.models)
        how = (f"small-backbone nets trained here on the built-in synthetic shapes for a {opts.train_seconds:.0f} s budget, "
               f"staged as in the paper (32s, then 16s from it, then 8s): {steps}. "
               f"**This is a short demonstration training, not a trained model**: read the figure for the geometry of "
               f"the maps, not for accuracy; pass `--checkpoint` (repeatable, e.g. "
               f"`runs/demo/checkpoints/best.pt` from `fcnseg demo`) for the view of trained nets")
    if opts.image:
        from fcnseg.images import read_image

        image, mask = read_image(opts.image), None
    else:
        # A scene of the synthetic style the models were trained on, when their classes are one's.
        style = style_of_classes(trained.class_names) or "shapes"
        item = generate_sample(opts.seed, "val", 0, style=style, size=(160, 160))
        image, mask = item.image, item.mask
    view = upsampling_view(trained, image, mask)
    caption = ("models from checkpoints" if opts.checkpoints else
               f"models trained here for {opts.train_seconds:.0f} s only: the geometry of the maps, not a trained model's accuracy")
    fig = figures.upsampling(view, out / "upsampling.png", caption)
    scores = {}
    if mask is not None:
        labelled = mask != 255
        for arch, o in view.outputs.items():
            scores[arch] = float((o.argmax(0).numpy()[labelled] == mask[labelled]).mean())
    acc = ""
    if scores:
        acc = "Pixel accuracy on this image: " + ", ".join(f"{a} {v:.0%}" for a, v in scores.items()) + "."
    text = f"""## 4. Upsampling: coarse scores to pixels, and skips

**Paper (sections 3.3, 4.2, figure 4):** upsampling by a backwards-strided convolution initialised to bilinear interpolation
turns the coarse output into dense pixels, and fusing the finer pool4 and pool3 predictions (FCN-16s, FCN-8s) refines the
detail that FCN-32s's 32-pixel stride loses.

Models: {how}.

![upsampling]({fig})

Left to right: the coarse `score_fr` map ({view.coarse.shape[-2]}x{view.coarse.shape[-1]} cells for a {image.shape[0]}x{image.shape[1]}
image), the same scores through a 64x64 bilinear-initialised transposed convolution of stride 32 (cropped by the derived
offset), then each net's output. Top: predicted labels; bottom: probability of `{view.class_names[view.focus_class]}`, each
panel scaled to its own range (given above it).
{acc} Bilinear upsampling only smooths what the 1/32 grid holds; the skips add information from finer layers.
"""
    return text, {"source": trained.source, "steps": trained.steps, "pixel_accuracy": scores}


def shift_stitch_section(opts: ExplainOptions, out: Path) -> tuple[str, dict]:
    comparisons = []
    for name in ("small", "small-padded"):
        classifier = build_classifier(name, opts.seed)
        net = pw.convolutionalized(classifier)
        start = _start_for_factor(net, opts.stitch_factor)
        comparisons.append(
            ss.compare(net, opts.stitch_size, start=start, padded=classifier.padded, name=name, seed=opts.seed, repeats=opts.repeats)
        )
    fig = figures.shift_stitch(comparisons, out / "shift_stitch.png")
    rows = []
    for c in comparisons:
        t = c.seconds
        rows.append([
            f"`{c.net}`", f"{c.factor}x{c.factor} = {c.factor ** 2}", f"{c.coarse_shape[-2]}x{c.coarse_shape[-1]}",
            f"{c.dense_shape[-2]}x{c.dense_shape[-1]}", f"{c.compared_positions}" + (" (interior)" if c.net != "small" else " (all)"),
            f"{c.max_abs_diff:.1e}", _fmt_s(t.get("shift-and-stitch")), _fmt_s(t.get("rarefied")),
            _fmt_s(t.get("coarse")), _fmt_s(t.get("coarse+bilinear")),
            human_flops(c.flops["shift-and-stitch"]), human_flops(c.flops["rarefied"]), human_flops(c.flops["coarse+bilinear"]),
        ])
    c0 = comparisons[0]
    text = f"""## 5. Shift-and-stitch is filter rarefaction

**Paper (section 3.2):** dense predictions can be had from a coarse net by shifting the input by every offset in
[0, f)^2 and interlacing the f^2 outputs; the same output comes from setting a layer's stride to 1 and enlarging the
following filters ("rarefy the filter", repeated layer by layer until the subsampling is gone); the paper prefers learned
upsampling, which costs one pass.

Here the strides of the last layers, which subsample by f = {c0.factor}, are undone on a {opts.stitch_size}x{opts.stitch_size} image:
shift-and-stitch runs the net on {c0.factor ** 2} copies shifted by multiples of {c0.input_stride} px (cropped left/top,
zero-padded right/bottom) and interlaces them; the rarefied net is the same net with those layers' stride set to 1 and every
later kernel dilated by the stride removed before it (`fcnseg.ideas.shift_stitch.rarefy`). Learned upsampling is one coarse
pass and a bilinear-initialised transposed convolution by {c0.factor}.

{_table(["net", "shifts", "coarse output", "dense output", "positions compared", "max abs diff",
         "time stitch", "time rarefied", "time coarse pass", "time coarse + upsampling",
         "FLOPs stitch", "FLOPs rarefied", "FLOPs coarse + upsampling"], rows)}

![shift and stitch]({fig})

Without padding the two dense maps are equal everywhere (to float32 rounding); with padding they agree on the interior, where
no receptive field reaches the zero padding of either the image or a shifted copy. Shift-and-stitch needs
{_ratio(c0.flops["shift-and-stitch"], c0.flops["coarse+bilinear"])} and the rarefied net
{_ratio(c0.flops["rarefied"], c0.flops["coarse+bilinear"])} the FLOPs of one coarse pass plus upsampling (the rarefied net shares
the layers before the removed strides, which the f^2 shifted runs repeat); the paper keeps the cheap pass and learns the
upsampling instead.
"""
    result = [{k: v for k, v in asdict(c).items() if k not in ("stitched", "rarefied", "coarse", "valid")} for c in comparisons]
    return text, {"comparisons": result}


# --------------------------------------------------------------------------------------------- the report


def explain(options: ExplainOptions | None = None, **overrides) -> dict:
    """Run every measurement and write ``report.md``, PNG figures and ``results.json`` into ``options.out_dir``.

    Returns:
        the results dict (also written as ``results.json``), with ``report`` the path of ``report.md``.
    """
    opts = options or ExplainOptions()
    for key, value in overrides.items():
        setattr(opts, key, value)
    opts.validate()
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict = {"options": asdict(opts)}
    timings = {}

    t = time.perf_counter()
    log.info("1/5 patch-wise vs dense (%s)", opts.arch)
    pw_text, pw_info = patchwise_section(opts, out, results)
    timings["patchwise"] = time.perf_counter() - t
    classifier = pw_info["classifier"]

    t = time.perf_counter()
    log.info("2/5 fully connected -> convolution")
    fc_text, results["fc_to_conv"] = fc_conv_section(classifier)
    log.info("3/5 receptive fields and crop offsets")
    rf_text, results["receptive_fields"] = receptive_section(classifier, pw.convolutionalized(classifier))
    timings["fc_conv_receptive"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("4/5 shift-and-stitch vs rarefied net vs upsampling")
    ss_text, results["shift_stitch"] = shift_stitch_section(opts, out)
    timings["shift_stitch"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("5/5 upsampling view (%s)", "checkpoints" if opts.checkpoints else f"training {opts.train_seconds:.0f} s")
    up_text, results["upsampling"] = upsampling_section(opts, out)
    timings["upsampling"] = time.perf_counter() - t

    main = pw_info["main"]
    results["summary"] = main
    total = time.perf_counter() - started
    timings["total"] = total
    results["seconds"] = timings
    key = key_table(results)
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} CPUs")
    report = f"""# FCN's ideas, measured

Generated by `fcnseg explain` ({_command_line(opts)}) in {total:.0f} s on {machine}.
Every number below was computed by this run; timings depend on the machine and its load, ratios less so.
Paper: Long, Shelhamer & Darrell, *Fully Convolutional Networks for Semantic Segmentation*, CVPR 2015.

## Key numbers

{key}

{pw_text}
{fc_text}
{rf_text}
{up_text}
{ss_text}"""
    atomic_write_text(report, out / "report.md")
    results["report"] = str(out / "report.md")
    results["key_table"] = key
    write_json(results, out / "results.json")
    log.info("wrote %s in %.0f s", out / "report.md", total)
    return results


def key_table(results: dict) -> str:
    """The one table that sums the report up (copied into docs/ideas.md)."""
    rows = []
    for c in results["patchwise"]:
        g = c["grid"]
        rows.append([
            f"patch-wise vs dense, `{c['classifier']}`, {c['image_size']} px, {g['rows']}x{g['cols']} windows",
            f"max abs diff {c['max_abs_diff']:.1e} ({c['relative_diff']:.0e} of max)",
            f"{_fmt_s(c['patchwise']['seconds'])} vs {_fmt_s(c['dense']['seconds'])} = **{_ratio(c['patchwise']['seconds'], c['dense']['seconds'])}**; "
            f"FLOPs {_ratio(c['patchwise']['flops'], c['dense']['flops'])}; memory {_ratio(c['patchwise']['peak_bytes'], c['dense']['peak_bytes'])}",
        ])
    fc = results["fc_to_conv"]
    rows.append([f"FC -> conv ({', '.join(layer['name'] + ' ' + 'x'.join(map(str, layer['conv'])) for layer in fc['layers'][:1])} ...)",
                 f"max abs diff {fc['max_abs_diff']:.1e}", "-"])
    for c in results["shift_stitch"]["comparisons"]:
        t = c["seconds"]
        rows.append([
            f"shift-and-stitch vs rarefied net, `{c['net']}`, f={c['factor']}",
            f"max abs diff {c['max_abs_diff']:.1e} on {c['compared_positions']} positions" + (" (interior)" if c["net"] != "small" else ""),
            f"stitch {_fmt_s(t.get('shift-and-stitch'))}, rarefied {_fmt_s(t.get('rarefied'))}, coarse + upsampling "
            f"{_fmt_s(t.get('coarse+bilinear'))}; FLOPs {_ratio(c['flops']['shift-and-stitch'], c['flops']['coarse+bilinear'])} "
            f"and {_ratio(c['flops']['rarefied'], c['flops']['coarse+bilinear'])} of upsampling's",
        ])
    crops = results["receptive_fields"]["crops"]
    rows.append([
        "crop offsets derived from the layers",
        ", ".join(f"{c['arch']} {c['crop']} {c['offset']}" for c in crops),
        "-",
    ])
    return _table(["claim", "equality", "cost (this machine)"], rows)


def _command_line(opts: ExplainOptions) -> str:
    parts = ["fcnseg explain", f"--arch {opts.arch}"]
    if opts.size:
        parts.append(f"--size {opts.size}")
    parts += [f"--checkpoint {c}" for c in opts.checkpoints]
    return "`" + " ".join(parts) + "`"


