"""The command-line tools (tools/*.py) on CPU, each run in-process through its main():
dataset check, feature export, ranked-list pictures + CMC curve, training curves, ONNX."""

import json
import os
import shutil
import subprocess
import sys

from lastreid.datasets import build_dataset, synthetic
from lastreid.datasets.check import CHECKABLE
from lastreid.errors import InputError, run_tool
from lastreid.evaluation import rank_metrics
from lastreid.visualize import grid_size

import numpy as np
import pytest
import torch
from conftest import load_tool
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
TOOLS = (
    "check_dataset",
    "extract_features",
    "visualize_ranks",
    "plot_curves",
    "export_onnx",
    "benchmark",
    "joint_table",
    "clothes_table",
)


def png_size(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def assert_drawn(path, size):
    """`path` is a PNG of `size` (width, height) with a drawing on it: more than 2% of its
    pixels are not white and it has more than 8 colours (a blank or one-colour picture has
    neither)."""
    assert png_size(path) == size, path
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    not_white = (rgb < 250).any(axis=2).mean()
    assert not_white > 0.02, f"{path}: {not_white:.1%} of the pixels are not white"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 8, f"{path}: almost one colour"


# The tiles of a ranked-list grid (lastreid.visualize): a thumbnail of 64 x 128 framed by a
# border 4 pixels wide, blue around the query, green / red around a right / wrong match.
THUMB, BORDER = (64, 128), 4
BLUE, GREEN, RED = (40, 90, 230), (0, 170, 60), (220, 30, 30)


def assert_rank_grid(path, topk, rows):
    """`path` is a grid of `rows` queries and `topk` matches each: its size, a blue frame per
    query and a green or red one per match (counted in pixels of exactly those colours; the
    labels' text adds some green / red), and images inside the frames, not blank tiles."""
    assert png_size(path) == grid_size(topk, rows), path
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    frame = (THUMB[0] + 2 * BORDER) * (THUMB[1] + 2 * BORDER) - THUMB[0] * THUMB[1]

    def count(colour):
        return int((rgb == colour).all(axis=2).sum())

    assert count(BLUE) == rows * frame, path
    framed = count(GREEN) + count(RED)
    assert rows * topk * frame <= framed < rows * topk * (frame + THUMB[0] * THUMB[1] // 4), path
    # the synthetic people: many colours (a missing image's tile has two)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100, path


@pytest.fixture(scope="module")
def weights(module_tmp):
    """A randomly initialised ResNet-18 BoT at 64x32 saved as a fastreid checkpoint, with
    its opts; BatchNorm statistics are perturbed so that eval mode is not the identity."""
    from conftest import FAST_CPU_OPTS, FP32_OPTS, write_random_bot

    opts = FAST_CPU_OPTS + FP32_OPTS  # plain float32: features compare tightly with a forward
    return write_random_bot(CONFIG, opts, module_tmp.mktemp("weights") / "model.pth"), opts


@pytest.fixture(scope="module")
def val_features(weights, synthetic_root, module_tmp):
    """tools/extract_features.py on the tiny LaSTVal (flip on, as in the config)."""
    path, opts = weights
    out = str(module_tmp.mktemp("features") / "val.npz")
    rc = load_tool("extract_features").main(
        [
            "--config-file",
            CONFIG,
            "--weights",
            path,
            "--dataset",
            "LaSTVal",
            "--root",
            str(synthetic_root),
            "-o",
            out,
        ]
        + opts
    )
    assert rc == 0
    return out


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_has_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        load_tool(name).main(["--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


# Errors: every tool's exit status -------------------------------------------------------


def _users_errors(tmp):
    """Per tool: arguments with a mistake of the user's, and words its one line must hold."""
    missing = str(tmp / "absent")
    (tmp / "foreign" / "last").mkdir(parents=True)
    (tmp / "foreign" / "last" / "notes.txt").write_text("not the generator's")
    cfg = ["--config-file", missing + ".yml", "--weights", missing + ".pth"]
    return {
        "benchmark.py": (["--output", missing, "SOLVER.MAX_EPOCH", "-3"], "MAX_EPOCH is -3"),
        "check_dataset.py": (["--datasets", "LaST", "--root", missing, "--quiet"], "problem(s)"),
        "clothes_table.py": (["--imagenet", missing + ".pth"], "no such file"),
        "convert_reference_checkpoint.py": ([missing + ".pth", "-o", missing], "does not exist"),
        "export_onnx.py": (cfg + ["-o", missing], "does not exist"),
        "extract_features.py": (cfg + ["--dataset", "LaST", "-o", missing], "does not exist"),
        "joint_table.py": (["--imagenet", missing + ".pth"], "no such file"),
        "make_synthetic_data.py": (["--root", str(tmp / "foreign")], "not overwriting"),
        "plot_curves.py": ([missing], "does not exist"),
        "train_net.py": (["--config-file", missing + ".yml"], "does not exist"),
        "transfer_matrix.py": (["--models", missing], "no such folder"),
        "visualize_ranks.py": (["--features", missing + ".npz", "-o", missing], "does not exist"),
    }


def test_every_tool_ends_a_users_error_in_one_line_and_a_usage_error_as_argparse(tmp_path):
    """Exit 1 and `<tool>: error: ...` for a mistake of the user's (a LastreidError through
    run_tool), exit 2 and argparse's usage for a bad command line."""
    errors = _users_errors(tmp_path)
    scripts = {n for n in os.listdir(os.path.join(REPO, "tools")) if n.endswith(".py")}
    assert scripts - set(errors) == {"run_demo.py"}  # it takes no input of the user's
    cases = []
    for name, (argv, _) in sorted(errors.items()):
        path = os.path.join(REPO, "tools", name)
        cases.append({"name": name, "argv": [path] + argv, "moment": None, "output": None})
        usage = {"name": name + " usage", "argv": [path, "--no-such-flag"], "moment": None}
        cases.append(dict(usage, output=None))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    runner = os.path.join(REPO, "tests", "forked_runs.py")
    results = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, runner, str(tmp_path / "cases.json"), str(results)],
        cwd=REPO,
        check=True,
        timeout=900,  # a guard against a hang only
    )
    results = json.loads(results.read_text())
    for name, (_, words) in errors.items():
        err = results[name]["stderr"]
        assert results[name]["status"] == 1 and "Traceback" not in err, (name, err[-2000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"{name}: error: ") and words in last, (name, last)
        usage = results[name + " usage"]
        assert usage["status"] == 2 and "usage: " in usage["stderr"], (name, usage["stderr"])


def _parsers():
    """Per tool that takes KEY VALUE overrides: its parse_args(argv) with what it requires."""
    from fastreid.engine import default_argument_parser
    from lastreid.startup import parse_with_overrides

    model = ["--config-file", CONFIG]
    features = model + ["--dataset", "LaST", "-o", "f"]
    return {
        "train_net": (lambda argv: parse_with_overrides(default_argument_parser(), argv), model),
        "extract_features": (load_tool("extract_features").parse_args, features),
        "export_onnx": (load_tool("export_onnx").parse_args, model + ["-o", "m.onnx"]),
        "visualize_ranks": (load_tool("visualize_ranks").parse_args, ["--features", "f.npz"]),
    }


@pytest.mark.parametrize(
    "name", ["train_net", "extract_features", "export_onnx", "visualize_ranks"]
)
def test_every_tool_checks_its_overrides_alike(name, capsys):
    """KEY VALUE pairs after an optional "--"; a lone key or a flag among them is a usage
    error naming it (exit 2), before any config is read."""
    parse, required = _parsers()[name]
    assert parse(required + ["--", "SOLVER.MAX_EPOCH", "3"]).opts == ["SOLVER.MAX_EPOCH", "3"]
    for argv, words in (
        (["MODEL.DEVICE", "cpu", "SOLVER.MAX_EPOCH"], "overrides come in KEY VALUE pairs"),
        (["MODEL.DEVICE", "cpu", "--quiet", "1"], "'--quiet' is not a config KEY"),
    ):
        with pytest.raises(SystemExit) as done:
            parse(required + argv)
        assert done.value.code == 2 and words in capsys.readouterr().err


def test_the_old_spellings_of_renamed_flags_still_work():
    """check_dataset's --dataset (now --datasets, as make_synthetic_data.py and the table tools
    spell a list), visualize_ranks' --output-dir and --num-queries (now --output, as every
    other tool, and --draw, no longer beside --num-query)."""
    assert load_tool("check_dataset").parse_args(["--dataset", "LaST"]).datasets == ["LaST"]
    old = ["--features", "f.npz", "--output-dir", "vis", "--num-queries", "3"]
    args = load_tool("visualize_ranks").parse_args(old)
    assert (args.output, args.draw) == ("vis", 3)


def test_run_tool_keeps_the_traceback_of_any_other_error(capsys):
    def bug():
        raise ValueError("a bug, not the user's mistake")

    with pytest.raises(ValueError, match="a bug"):
        run_tool(bug)

    def mistake():
        raise InputError("two\nlines")

    with pytest.raises(SystemExit) as done:
        run_tool(mistake)
    assert done.value.code == 1
    assert capsys.readouterr().err.strip().endswith("error: two lines")


# check_dataset ---------------------------------------------------------------------------


def test_check_dataset_passes_a_good_tree(synthetic_root, capsys):
    rc = load_tool("check_dataset").main(
        [
            "--datasets",
            "LaST",
            "LaSTVal",
            "PRCC",
            "CelebReID",
            "--root",
            str(synthetic_root),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("no problems") == 4 and "DIFFERS" not in out


@pytest.fixture(scope="module")
def every_tree(module_tmp):
    """The tiny synthetic trees of every dataset the checker knows."""
    root = module_tmp.mktemp("every_tree")
    synthetic.write_all(str(root), preset="tiny", seed=0, datasets=synthetic.ALL_DATASETS)
    return root


@pytest.mark.parametrize("name", list(CHECKABLE))
def test_check_dataset_runs_on_every_name_it_offers(every_tree, name, capsys):
    choices = load_tool("check_dataset").parse_args(["--datasets", name]).datasets
    assert choices == [name]  # offered by --datasets
    argv = ["--datasets", name, "--root", str(every_tree), "--quiet", "--strict", "--no-decode"]
    rc = load_tool("check_dataset").main(argv)
    out = capsys.readouterr().out
    assert rc == 0 and "no problems" in out and "DIFFERS" not in out, out
    if name == "LaSTClothes":  # its classes, counted here from the file names
        train = (every_tree / "last" / "train").rglob("*.jpg")
        pairs = {(p.stem.split("_")[0], p.stem.split("_")[5]) for p in train}
        n = len(pairs)
        assert f"  {n} training classes (person x outfit), expected {n}  ok" in out


def test_check_dataset_reports_every_defect(synthetic_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(synthetic_root / "last", root / "last")
    query = sorted((root / "last" / "test" / "query").glob("*.jpg"))
    bad_name = query[0].with_name("not_a_last_name.jpg")
    query[0].rename(bad_name)
    train = sorted((root / "last" / "train").rglob("*.jpg"))
    gallery = sorted((root / "last" / "test" / "gallery").rglob("*.jpg"))
    truncated, garbage = train[1], gallery[2]
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b"this is not a JPEG")
    (
        root / "last" / ".lastreid-synthetic.json"
    ).unlink()  # now compared with LaST's documented numbers

    rc = load_tool("check_dataset").main(["--datasets", "LaST", "--root", str(root), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1
    for path in (bad_name, truncated, garbage):
        assert str(path) in out
    assert "1 file name(s) that do not parse" in out and "2 image(s) that cannot be decoded" in out
    assert "71,248" in out and "DIFFERS" in out  # the documented train images, as data
    # Walking without decoding still finds the name.
    checker = load_tool("check_dataset")
    assert checker.main(["--datasets", "LaST", "--root", str(root), "--no-decode"]) == 1
    out = capsys.readouterr().out
    assert str(bad_name) in out and str(garbage) not in out


# extract_features ------------------------------------------------------------------------


def _direct_features(model, cfg, paths, flip):
    """The model's own output on the test transforms, batched by hand."""
    from fastreid.data.data_utils import read_image
    from fastreid.data.transforms import build_transforms

    transform = build_transforms(cfg, is_train=False)
    images = torch.stack([transform(read_image(p)) for p in paths])
    model.eval()
    with torch.no_grad():
        feats = model(images.clone())
        if flip:
            feats = (feats + model(images.flip(dims=[3]))) / 2
    return feats.numpy()


def test_extracted_features_match_the_model(weights, val_features, synthetic_root):
    from lastreid import FeatureExtractor
    from lastreid.features import build_inference_cfg, load_features

    path, opts = weights
    data = load_features(val_features)
    dataset = build_dataset("LaSTVal", root=str(synthetic_root))
    items = dataset.query + dataset.gallery
    assert data["num_query"] == len(dataset.query) and data["dataset"] == "LaSTVal"
    assert list(data["paths"]) == [p for p, _, _ in items]
    assert list(data["pids"]) == [pid for _, pid, _ in items]
    assert list(data["camids"]) == [c for _, _, c in items]
    assert data["features"].dtype == np.float32 and bool(data["flip"])

    cfg = build_inference_cfg(CONFIG, path, opts)
    extractor = FeatureExtractor(cfg, progress=False)
    paths = list(data["paths"])
    expected = _direct_features(extractor.model, cfg, paths, flip=True)
    np.testing.assert_allclose(data["features"], expected, rtol=1e-4, atol=1e-5)
    extractor.flip, extractor.batch_size = False, 7  # batches that do not divide the set
    np.testing.assert_allclose(
        extractor.extract(paths[:10]),
        _direct_features(extractor.model, cfg, paths[:10], flip=False),
        rtol=1e-4,
        atol=1e-5,
    )


def test_extract_features_of_a_folder_parses_names(weights, synthetic_root, tmp_path):
    from lastreid.features import load_features

    path, opts = weights
    crops = tmp_path / "crops"
    shutil.copytree(synthetic_root / "last" / "val" / "query", crops)
    first = sorted(crops.glob("*.jpg"))[0]
    first.rename(crops / "someone.jpg")
    out = tmp_path / "crops.npz"
    assert (
        load_tool("extract_features").main(
            [
                "--config-file",
                CONFIG,
                "--weights",
                path,
                "--images",
                str(crops),
                "-o",
                str(out),
                "--no-flip",
            ]
            + opts
        )
        == 0
    )
    data = load_features(str(out))
    names = [os.path.basename(p) for p in data["paths"]]
    assert len(names) == len(list(crops.glob("*.jpg"))) and data["num_query"] == 0
    unparsed = names.index("someone.jpg")
    assert data["pids"][unparsed] == -1 and (np.delete(data["pids"], unparsed) > 0).all()
    assert (data["camids"] == -1).all()  # LaST names carry no camera


# visualize_ranks -------------------------------------------------------------------------


def test_visualize_ranks_from_features(val_features, tmp_path, capsys):
    from lastreid.features import load_features
    from lastreid.visualize import rank_queries

    out = tmp_path / "vis"
    rc = load_tool("visualize_ranks").main(
        [
            "--features",
            val_features,
            "-o",
            str(out),
            "--order",
            "worst",
            "--draw",
            "5",
            "--per-page",
            "2",
            "--topk",
            "6",
            "--quiet",
        ]
    )
    assert rc == 0
    # The tiny LaSTVal has 3 queries: pages of 2 and 1.
    assert_rank_grid(out / "ranks_000.png", 6, 2)
    assert_rank_grid(out / "ranks_001.png", 6, 1)
    assert_drawn(out / "cmc.png", (600, 450))
    assert "mAP" in capsys.readouterr().out

    # The per-query APs are those of the evaluation: their mean is rank_metrics' mAP, and
    # worst-first is ascending; a seeded random draw repeats.
    d = load_features(val_features)
    nq, f, p, c = d["num_query"], d["features"], d["pids"], d["camids"]
    split = (f[:nq], f[nq:], p[:nq], p[nq:], c[:nq], c[nq:])
    rows = rank_queries(*split, order="worst", num_queries=nq, topk=5, progress=False)
    aps = [r["ap"] for r in rows]
    assert aps == sorted(aps)
    assert np.mean(aps) == pytest.approx(rank_metrics(*split)[1], abs=1e-6)
    for r in rows:
        assert (np.diff(r["distances"]) >= 0).all()
        assert list(r["correct"]) == list(p[nq:][r["matches"]] == p[r["query"]])
    draw = [
        [
            r["query"]
            for r in rank_queries(*split, order="random", num_queries=4, seed=s, progress=False)
        ]
        for s in (3, 3, 4)
    ]
    assert draw[0] == draw[1] != draw[2]


def test_visualize_ranks_from_a_model(weights, synthetic_root, tmp_path):
    path, opts = weights
    out = tmp_path / "vis"
    rc = load_tool("visualize_ranks").main(
        [
            "--config-file",
            CONFIG,
            "--weights",
            path,
            "--dataset",
            "LaST",
            "--root",
            str(synthetic_root),
            "-o",
            str(out),
            "--order",
            "random",
            "--num-queries",
            "2",
            "--topk",
            "4",
            "--quiet",
        ]
        + opts
    )
    assert rc == 0
    assert_rank_grid(out / "ranks_000.png", 4, 2)
    assert_drawn(out / "cmc.png", (600, 450))


# plot_curves -----------------------------------------------------------------------------


def _fake_run(folder, eval_period=2, iters_per_epoch=22, epochs=6, prefixed=False):
    folder.mkdir()
    lines = []
    for epoch in range(epochs):
        last = (epoch + 1) * iters_per_epoch - 1
        for it in sorted(
            {min(i, last) for i in range(epoch * iters_per_epoch + 19, last + 20, 20)}
        ):
            line = {
                "iteration": it,
                "total_loss": 6.0 - it / 50,
                "loss_cls": 4.5 - it / 60,
                "loss_triplet": 1.5 - it / 300,
                "lr": 3.5e-4 * min(1.0, (it + 1) / 44),
                "time": 0.5,
            }
            # fastreid evaluates every eval_period epochs and after the last one
            if it == last and ((epoch + 1) % eval_period == 0 or epoch == epochs - 1):
                keys = [f"{d}/" for d in ("LaSTVal", "PRCC")] if prefixed else [""]
                for k in keys:
                    line.update(
                        {
                            k + "Rank-1": 20.0 + 10 * epoch,
                            k + "mAP": 10.0 + 8 * epoch,
                            k + "metric": 15.0 + 9 * epoch,
                        }
                    )
            lines.append(json.dumps(line))
    (folder / "metrics.json").write_text("\n".join(lines) + "\n")
    (folder / "config.yaml").write_text(
        f"SOLVER:\n  MAX_EPOCH: {epochs}\nTEST:\n  EVAL_PERIOD: {eval_period}\n"
    )
    return folder


@pytest.mark.parametrize("prefixed", [False, True])
def test_plot_curves(tmp_path, prefixed, capsys):
    from lastreid.curves import iterations_per_epoch

    run = _fake_run(tmp_path / "run", prefixed=prefixed)
    assert iterations_per_epoch(str(run)) == 22
    assert load_tool("plot_curves").main([str(run)]) == 0
    assert_drawn(run / "curves.png", (1500, 420))
    out = tmp_path / "sub" / "c.png"
    plotter = load_tool("plot_curves")
    assert plotter.main([str(run), "-o", str(out), "--x", "iteration", "--dpi", "50"]) == 0
    assert_drawn(out, (750, 210))
    assert "wrote" in capsys.readouterr().out


def test_iterations_per_epoch_when_only_the_last_epoch_is_evaluated(tmp_path):
    from lastreid.curves import iterations_per_epoch

    # One evaluation, after epoch 2 of 2 (EVAL_PERIOD 10): 44 iterations are 2 epochs.
    run = _fake_run(tmp_path / "run", eval_period=10, epochs=2)
    assert iterations_per_epoch(str(run)) == 22


def test_plot_curves_marks_the_final_test_of_results_json(tmp_path, monkeypatch):
    import matplotlib.axes

    run = _fake_run(tmp_path / "run")
    (run / "config.yaml").unlink()  # the iterations per epoch come from results.json then
    final = {"checkpoint": "model_best.pth", "epoch": 4, "datasets": {"LaST": {"Rank-1": 55.0}}}
    results = {"evaluation": {}, "iterations_per_epoch": 22, "final_test": final}
    (run / "results.json").write_text(json.dumps(results))
    drawn, plot = [], matplotlib.axes.Axes.plot

    def recording_plot(self, *args, **kwargs):
        drawn.append((args, kwargs.get("label", "")))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording_plot)
    assert load_tool("plot_curves").main([str(run)]) == 0
    stars = [(list(a[0]), list(a[1]), label) for a, label in drawn if "final test" in label]
    assert stars == [([4.0], [55.0], "LaST Rank-1, model_best.pth (final test)")]
    assert any(label == "Rank-1" for _, label in drawn)  # the validation curve, over epochs


def test_plot_curves_without_config_uses_iterations(tmp_path):
    from lastreid.curves import iterations_per_epoch

    run = _fake_run(tmp_path / "run")
    (run / "config.yaml").unlink()
    assert iterations_per_epoch(str(run)) is None
    assert load_tool("plot_curves").main([str(run), "-o", str(tmp_path / "c.png")]) == 0
    with pytest.raises(InputError, match="cannot work out the iterations per epoch"):
        load_tool("plot_curves").main([str(run), "--x", "epoch"])  # run_tool: one line, exit 1


# export_onnx -----------------------------------------------------------------------------


def test_export_onnx_matches_pytorch(weights, tmp_path, capsys):
    from lastreid import FeatureExtractor
    from lastreid.features import build_inference_cfg
    from lastreid.onnx_export import check_onnx

    import onnxruntime as ort

    path, opts = weights
    out = tmp_path / "model.onnx"
    rc = load_tool("export_onnx").main(
        ["--config-file", CONFIG, "--weights", path, "-o", str(out), "--batch-sizes", "1,5"] + opts
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "onnxruntime matches PyTorch" in text
    cfg = build_inference_cfg(CONFIG, path, opts)
    extractor = FeatureExtractor(cfg, flip=False, progress=False)
    for _, err in check_onnx(extractor.model, str(out), (64, 32), batch_sizes=(2, 7)):
        assert err < 1e-4
    # The graph's features are the extractor's (no flip) on the same images.
    images = torch.rand(3, 3, 64, 32) * 255
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": images.numpy()})[0]
    np.testing.assert_allclose(got, extractor.forward(images).numpy(), rtol=1e-4, atol=1e-5)
