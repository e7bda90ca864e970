"""The model card names which anomaly restorer serves the map, and why."""

from __future__ import annotations

from flows.model_card import model_card


def _figures(shipped: float, tuned: float) -> dict:
    return {"shipped": {"criterion": shipped}, "fine-tuned": {"criterion": tuned}}


def _card(choice: dict | None) -> str:
    cfg = {"init": "pretrained", "anomaly": {"budget_share": 0.4, "head": False}}
    return model_card("vae3d", "run", {"train": 9, "val": 6}, "sha", cfg, {}, {"val_ssim": 0.9}, "abc", choice)


def test_the_card_says_which_restorer_weights_were_kept_and_on_what_figures():
    kept = _card({"chosen": "shipped", "figures": _figures(0.8215, 0.8219)})
    assert "the shipped restorer was kept, the fine-tune not clearly better" in kept
    assert "shipped 0.8215, fine-tuned 0.8219" in kept
    tuned = _card({"chosen": "fine-tuned", "figures": _figures(0.777, 0.814)})
    assert "the fine-tune was kept" in tuned and "not clearly better" not in tuned
    assert "was kept" not in _card(None)  # no choice made (a scratch start, or too few validation scans)
