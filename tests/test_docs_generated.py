"""The site's build-time figures and tables: each generator runs, and its numbers come from maskloss.

Fast on purpose: imports the generator modules and draws each figure once; the whole site is built
by CI's Sphinx step, not here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import maskloss_generated as generated  # noqa: E402

import maskloss  # noqa: E402

FIGURES = generated.generator_modules(DOCS / "figures")
TABLES = generated.generator_modules(DOCS / "tables")
#: Tables that run check_loss or the frameworks at build time; tested below on a small input.
SLOW_TABLES = ("bug_gallery_table", "conformance_output")


def _module(folder: str, name: str):  # type: ignore[no-untyped-def]
    return generated.load(DOCS / folder / f"{name}.py")


@pytest.mark.parametrize("path", FIGURES, ids=lambda p: p.stem)
def test_every_figure_draws_a_non_empty_figure(path: Path, tmp_path: Path) -> None:
    target = generated.write_figure(path, tmp_path)
    assert target.stat().st_size > 5_000  # a real picture, not an empty canvas


@pytest.mark.parametrize("path", [p for p in TABLES if p.stem not in SLOW_TABLES], ids=lambda p: p.stem)
def test_every_table_renders_markdown(path: Path, tmp_path: Path) -> None:
    text = generated.write_table(path, tmp_path).read_text()
    assert text.strip()


def test_a_failing_generator_fails_the_build_naming_the_module(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "broken_table.py").write_text("def render():\n    raise ZeroDivisionError('boom')\n")
    (tmp_path / "tables" / "_helper.py").write_text("raise AssertionError('helpers are not outputs')\n")
    with pytest.raises(RuntimeError, match=r"docs/tables/broken_table\.py failed: ZeroDivisionError: boom"):
        generated.generate(tmp_path)


def test_f2_numbers_are_maskloss_reduce_on_the_seed_grid() -> None:
    f2 = _module("figures", "f2_reduction_denominators")
    # The seed (3, 5, 1 valid steps; losses 1, 2, 6): sums 3 + 10 + 6 = 19, worked by hand.
    expected = {"sum": 19.0, "token_mean": 19 / 9, "sequence_mean": 3.0, "batch_mean": 19 / 3, "element_mean": 19 / 15}
    assert f2.values() == pytest.approx(expected, rel=1e-12)


def test_f3_weights_are_the_value_and_grad_gradient() -> None:
    f3 = _module("figures", "f3_gradient_weights")
    style = _module("figures", "_style")
    losses, mask = style.seed_batch()
    for name, weights in f3.weights().items():
        # d(reduce(losses))/d(losses) by central differences on the valid steps (linear: exact).
        base = np.where(mask, losses, 0.0)
        for b, t in zip(*np.nonzero(mask), strict=True):
            bumped = base.copy()
            bumped[b, t] += 1.0
            slope = float(maskloss.reduce(bumped, mask, reduction=name)) - float(
                maskloss.reduce(base, mask, reduction=name)
            )
            assert weights[b, t] == pytest.approx(slope, rel=1e-12), (name, b, t)
        assert np.all(weights[~mask] == 0.0)


#: Width of the content column of the built site at a 1280-pixel window (sphinx-book-theme, measured
#: in the browser for commit a57e650: 660 px at 1280, 705 at 800), and the share of its natural
#: width a figure must keep there (issue 24: figures drawn at the size they are shown).
COLUMN_PX = 660
SHOWN_AT_LEAST = 0.9


@pytest.mark.parametrize("path", FIGURES, ids=lambda p: p.stem)
def test_every_figure_is_drawn_at_the_size_the_site_shows_it(path: Path, tmp_path: Path) -> None:
    from PIL import Image

    with Image.open(generated.write_figure(path, tmp_path)) as image:
        width, _ = image.size
    assert min(1.0, COLUMN_PX / width) >= SHOWN_AT_LEAST, f"{path.stem}: {width} px, shown at {COLUMN_PX / width:.0%}"


#: By hand: 0.5 * p**2 of p = 1..4 is 0.5, 2, 4.5, 8 (mean 3.75); d/dl of sum(l * m) / sum(m) is
#: m / 4; d/dp is p / 4 at the valid steps.
F7_VALUE = 3.75
F7_GRAD_LOSSES = [0.25, 0.25, 0.25, 0.25, 0.0, 0.0]
F7_GRAD_PREDICTIONS_VALID = [0.25, 0.5, 0.75, 1.0]


def _assert_f7_bars(passes) -> None:  # type: ignore[no-untyped-def]
    multiply, select = passes["x * mask"], passes["select"]
    assert np.isnan(multiply.value) and select.value == pytest.approx(F7_VALUE)
    np.testing.assert_array_equal(multiply.grad_losses, F7_GRAD_LOSSES)  # finite: 0 at the padded steps
    np.testing.assert_array_equal(select.grad_losses, F7_GRAD_LOSSES)
    np.testing.assert_array_equal(multiply.grad_predictions[:4], F7_GRAD_PREDICTIONS_VALID)
    assert np.all(np.isnan(multiply.grad_predictions[4:]))  # NaN only w.r.t. the padded predictions
    np.testing.assert_array_equal(select.grad_predictions, F7_GRAD_PREDICTIONS_VALID + [0.0, 0.0])


def test_f7_numpy_bars_multiply_leaks_nan_only_into_the_padded_predictions() -> None:
    _assert_f7_bars(_module("figures", "f7_nan_multiply_vs_select").by_numpy())


def test_f7_bars_are_torch_autograd_and_the_figure_draws_them() -> None:
    torch = pytest.importorskip("torch", reason="torch is in the frameworks extra; CI installs it")
    f7 = _module("figures", "f7_nan_multiply_vs_select")
    _assert_f7_bars(f7.by_torch())
    source, passes = f7.computed()
    assert source.startswith(f"torch {torch.__version__.split('+')[0]} autograd")
    for rule, numpy_pass in f7.by_numpy().items():  # the fallback draws the same bars
        assert passes[rule].value == pytest.approx(numpy_pass.value, nan_ok=True)
        np.testing.assert_array_equal(passes[rule].grad_losses, numpy_pass.grad_losses)
        np.testing.assert_array_equal(passes[rule].grad_predictions, numpy_pass.grad_predictions)


def test_f7_without_torch_says_so_and_draws_the_numpy_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    f7 = _module("figures", "f7_nan_multiply_vs_select")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    source, passes = f7.computed()
    assert "torch not installed" in source
    _assert_f7_bars(passes)
    f7.draw()


def test_tolerance_table_lists_every_dtype_of_tolerances() -> None:
    from maskloss.testing import TOLERANCES

    text = _module("tables", "tolerance_table").render()
    for dtype, (rtol, atol) in TOLERANCES.items():
        assert f"| `{dtype}` |" in text and f"| {rtol:g} | {atol:g} |" in text


def test_figure_gallery_shows_every_figure_with_alt_text_and_caption() -> None:
    text = _module("tables", "figure_gallery").render()
    for path in FIGURES:
        assert f"/_generated/{path.stem}.png" in text
    assert text.count(":alt: ") == len(FIGURES)


def test_f4_numbers_match_the_hand_computed_accumulation() -> None:
    n = _module("figures", "f4_microbatches").numbers()
    # By hand: sequence sums 3, 10, 6, 12 over 3, 5, 1, 4 valid steps; 31 / 13 overall.
    assert n["full batch"] == pytest.approx(31 / 13)
    assert n["merged totals"] == pytest.approx(31 / 13) and n["global sum / global count"] == pytest.approx(31 / 13)
    assert n["mean of means"] == pytest.approx((13 / 8 + 18 / 5) / 2)
    assert n["mean over ranks of micro means"] == pytest.approx((1 + 2 + 6 + 3) / 4)


def test_f4_and_f3_captions_say_what_the_figures_show() -> None:
    # Issue 24: figure 4's caption said gradient weights over bars of loss values; figure 3's
    # promised a shrinking with the padded length that it never shows.
    gallery = _module("tables", "figure_gallery")
    _, _, f4_caption = gallery.figure_texts(DOCS / "figures" / "f4_microbatches.py")
    assert f4_caption.startswith("Loss values, not gradient weights.")
    f4 = _module("figures", "f4_microbatches").draw()
    assert f4.axes[0].get_ylabel() == "loss value"
    chapter = " ".join((DOCS / "course" / "05-accumulation.md").read_text(encoding="utf-8").split())
    assert "Loss values, not weights." in chapter
    _, _, f3_caption = gallery.figure_texts(DOCS / "figures" / "f3_gradient_weights.py")
    assert "shrink" not in f3_caption


def test_f8_target_mass_is_eps_over_c_or_eps_over_c_minus_1() -> None:
    f8 = _module("figures", "f8_label_smoothing_mass")
    eps, c, gold = f8.EPSILON, f8.CLASSES, f8.GOLD
    old, new = (f8.target_distribution(version) for _, version in f8.RULES)
    others = np.arange(c) != gold
    assert old[gold] == pytest.approx(1 - eps + eps / c) and old[others] == pytest.approx(np.full(c - 1, eps / c))
    assert new[gold] == pytest.approx(1 - eps) and new[others] == pytest.approx(np.full(c - 1, eps / (c - 1)))


def test_bug_gallery_table_runs_check_loss_on_the_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    gallery = pytest.importorskip("tests.bug_gallery")
    monkeypatch.setattr(gallery, "GALLERY", gallery.GALLERY[:1])  # bug 1: caught on the first example
    text = _module("tables", "bug_gallery_table").render()
    assert "| 1. mean over all steps, padding included | padding amount | 1 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1. "))
    # "padding amount" can only fail on a batch with a padded step: the shrunk batch's mask shows a 0
    assert "mask `[[1, 0" in row and "right padded" in row, row


def test_bug_gallery_solutions_name_every_property_the_gallery_accepts() -> None:
    gallery = pytest.importorskip("tests.bug_gallery")
    text = (DOCS / "course" / "08-solutions.md").read_text(encoding="utf-8").lower()
    for entry in gallery.GALLERY:
        number = entry.name.split(".")[0].rstrip("ab")
        start = text.index(f"\n{number}. **")
        end = text.find("\n", text.find("**", start + len(number) + 5))
        answer = text[start:end]
        for prop in entry.properties:
            assert prop in answer, (entry.name, prop, answer)


def test_bug_gallery_table_refuses_a_property_the_solutions_do_not_name(monkeypatch: pytest.MonkeyPatch) -> None:
    gallery = pytest.importorskip("tests.bug_gallery")
    entry = gallery.GALLERY[0]  # reported as "padding amount" (test above)
    narrowed = gallery.Entry(entry.name, entry.bug, entry.fixed, entry.like, entry.options, properties=("agreement",))
    monkeypatch.setattr(gallery, "GALLERY", (narrowed,))
    with pytest.raises(AssertionError, match="reported 'padding amount'"):
        _module("tables", "bug_gallery_table").render()


def test_bug_gallery_table_refuses_a_bug_check_loss_does_not_catch(monkeypatch: pytest.MonkeyPatch) -> None:
    gallery = pytest.importorskip("tests.bug_gallery")
    entry = gallery.GALLERY[0]
    fixed = gallery.Entry("a fix", entry.fixed, entry.fixed, entry.like, entry.options)
    monkeypatch.setattr(gallery, "GALLERY", (fixed,))
    with pytest.raises(AssertionError, match="did not catch gallery bug 'a fix'"):
        _module("tables", "bug_gallery_table").render()


def test_conformance_output_shows_versions_errors_and_missing_frameworks(monkeypatch: pytest.MonkeyPatch) -> None:
    from maskloss.conformance import ConformanceResult, FrameworkRun

    table = _module("tables", "conformance_output")
    result = ConformanceResult("torch", "2.13.0", "cross_entropy", 3, 1.5e-16, 2e-16, 1e-12, True, "")
    runs = [
        FrameworkRun("torch", "torch", "2.13.0", "ok", (result,)),
        FrameworkRun("optax", "optax", None, "not installed"),
    ]
    monkeypatch.setattr(table, "run_all", lambda seed, n_cases: runs)  # maskloss.conformance.run_all
    text = table.render()
    assert "| torch | 2.13.0 | `cross_entropy` | 3 | 1.5e-16 | 2e-16 | pass |" in text
    assert "| optax |  | not installed |" in text


def test_conformance_page_counts_the_frameworks_that_cannot_be_installed() -> None:
    # Issue 24: the page said "the five that cannot be installed" above a table of six such rows.
    from maskloss.conformance import NOT_INSTALLABLE

    words = {5: "five", 6: "six", 7: "seven"}
    text = " ".join((DOCS / "reference" / "framework-conventions.md").read_text(encoding="utf-8").split())
    assert f"{words[len(NOT_INSTALLABLE)]} that cannot be installed here" in text
    assert not any(f"{w} that cannot be installed" in text for n, w in words.items() if n != len(NOT_INSTALLABLE))


def test_f1_polarities_and_left_padding() -> None:
    f1 = _module("figures", "f1_padding_and_polarity")
    b = f1.batches()
    (right_ids, right_mask), (left_ids, left_mask) = b["right-padded"], b["left-padded"]
    assert maskloss.padding_side(right_mask) == "right" and maskloss.padding_side(left_mask) == "left"
    for row in range(right_ids.shape[0]):  # the same tokens, in the same order, on the other side
        np.testing.assert_array_equal(right_ids[row][right_mask[row]], left_ids[row][left_mask[row]])
    p = f1.polarities()
    np.testing.assert_array_equal(p["torch key_padding_mask (True = padding)"], ~right_mask)
    np.testing.assert_array_equal(p["HF attention_mask (1 = valid)"], right_mask.astype(int))


def test_f5_num_items_in_batch_is_the_count_hf_divides_by() -> None:
    from maskloss.conventions import hf

    f5 = _module("figures", "f5_causal_shift")
    assert f5.num_items_in_batch() == sum(n - 1 for n in f5.LENGTHS)  # one target fewer per sequence
    labels = f5.rows()["labels"]
    logits = np.random.default_rng(0).normal(size=(*labels.shape, 400))
    mean = hf.for_causal_lm_loss(logits, labels, 400)
    summed_over_count = hf.for_causal_lm_loss(logits, labels, 400, num_items_in_batch=f5.num_items_in_batch())
    assert float(summed_over_count) == pytest.approx(float(mean), rel=1e-12)


def test_f6_masks_follow_keras_rules() -> None:
    f6 = _module("figures", "f6_mask_through_layers")
    # Masking(0.0): a step is padding when all its features are 0 (read off X by hand).
    expected = np.array([[False, False, True, True], [True, True, True, False]])
    kept = f6.stage_masks(True)
    np.testing.assert_array_equal(kept["after Masking(0.0)"], expected)
    np.testing.assert_array_equal(kept["mask the loss sees"], expected)
    assert f6.stage_masks(False)["mask the loss sees"] is None


def test_conventions_table_lists_every_public_function_of_every_convention_module() -> None:
    import importlib

    from maskloss.conventions import MODULES

    text = _module("tables", "conventions_table").render()
    for name in MODULES:
        module = importlib.import_module(f"maskloss.conventions.{name}")
        assert f"[`{name}`](/reference/conventions/{name}.rst)" in text
        for attr in getattr(module, "__all__", []):
            if callable(getattr(module, attr)):
                assert f"| `{name}` | `{attr}` |" in text
