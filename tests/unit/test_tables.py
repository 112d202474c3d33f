"""The Prefect UI's tables for people (tasks.runs.tables), the recipe in words, and the log's start line."""

from __future__ import annotations

from tasks.model.recipes import Recipe
from tasks.runs.tables import leaderboard_table, log_text, run_table, search_table
from tasks.tune.progress import TrialBoard, starting_line
from tests.unit.test_progress import trial

RECIPE = Recipe(optimizer="adamw", weight_decay=0.0083, learning_rate=0.0028, schedule="cosine", label_smoothing=0.03,
                augmentation="shift", dropout=0.02, epochs=20)


def test_the_recipe_reads_in_words():
    assert RECIPE.describe() == "AdamW wd 8.3e-3, lr 2.8e-3 cosine, batch 128, smoothing 0.03, shifts, dropout 0.02, 20 epochs"
    assert Recipe().describe() == "Adam, lr 1.0e-3 constant, batch 128, no smoothing, no augmentation, 100 epochs"


def test_the_run_table_has_the_test_accuracy_first_in_words_and_rounded():
    (row,) = run_table([{"model": "Baseline", "key": "baseline", "params": 7850, "epochs": 44, "report_epochs": 44,
                         "train_acc": 87.0712, "report_train_acc": 87.07, "test_acc": 84.6, "report_test_acc": 84.6,
                         "test_acc_diff": -17.6, "sec_per_epoch": 1234.5}])
    assert list(row)[:4] == ["Model", "Test accuracy (%)", "Report's test accuracy (%)", "Δ vs report (points)"]
    assert (row["Test accuracy (%)"], row["Δ vs report (points)"], row["Train accuracy (%)"]) == ("84.60", "-17.60", "87.07")
    assert (row["Parameters"], row["Seconds per epoch"], row["Epochs"]) == ("7,850", "1,234.50", "44")


def test_the_search_tables_give_percentages_and_the_recipe_in_words():
    trial_row = {"architecture": "cnn2", "trial_id": "a1", "config": RECIPE.model_dump(), "epochs": 20,
                 "val_accuracy": 0.5633333325386047, "best_val_accuracy": 0.6, "stopped_early": False,
                 "ended": "finished", "new": True}
    older = {**trial_row, "trial_id": "b2", "val_accuracy": 0.9, "new": False, "run_id": "night-1"}
    board = leaderboard_table([older, {**trial_row, "trial_id": "c3", "val_accuracy": 0.4}, trial_row])
    assert [(r["Trial"], r["Final validation accuracy (%)"], r["From"]) for r in board] == [
        ("a1", "56.33", "this search"), ("c3", "40.00", "this search"), ("b2", "90.00", "search night-1")]
    assert board[0]["Recipe"].startswith("AdamW wd 8.3e-3, lr 2.8e-3 cosine")
    (row,) = search_table([{"model": "2 CNN Layers", "key": "cnn2", "params": 409034, "seeds": 3,
                            "test_acc_mean": 93.03, "test_acc_std": 0.04, "report_test_acc": None,
                            "test_acc_diff": None, "val_acc_mean": 93.48, "epochs": 20, "recipe": RECIPE.model_dump()}])
    assert list(row)[1] == "Test accuracy (%, mean ± std over seeds)" and row[list(row)[1]] == "93.03 ± 0.04"
    assert (row["Report's test accuracy (%)"], row["Δ vs report (points)"]) == ("—", "—")


def test_the_start_line_says_how_many_trials_on_what():
    assert starting_line(5, 1, 0, {"CPU": 2.0}) == ("5 trials starting on 2 CPUs (1 CPU each, up to 2 at a time); "
                                                    "a line per epoch of each trial follows")
    assert starting_line(6, 1, 0.5, {"CPU": 16.0, "GPU": 1.0}, max_concurrent=4).startswith(
        "6 trials starting on 16 CPUs and 1 GPU (1 CPU and 0.5 GPU each, up to 2 at a time)")


def test_a_search_trials_last_epoch_is_logged_with_its_end():
    """A search's trial publishes nothing: its last epoch's result says finished; its epoch line is kept."""
    board, t = TrialBoard(), trial(max_epochs=2)
    board.result(t, {"epoch": 1, "val_accuracy": 0.5, "seconds": 1.0, "finished": False})
    line = board.result(t, {"epoch": 2, "val_accuracy": 0.61, "seconds": 0.5, "best_val_accuracy": 0.61,
                            "finished": True})
    assert line == "baseline: epoch 2/2 val_accuracy 61.00% (0.5 s); finished after 2 epochs"


def test_the_logged_summary_has_no_blank_lines():
    assert log_text("# Run x\n\n| a |\n|---|\n\nProtocol: p.\n") == "# Run x\n| a |\n|---|\nProtocol: p."
