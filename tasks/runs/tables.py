"""The tables people read in the Prefect UI (table artifacts): headers in words with units, numbers rounded for
reading (two decimals, thousands separators), the test accuracy in the first columns, recipes in words.

Made from the records' rows (tasks.runs.reporting.table1_rows, tasks.tune.search.search_table_rows and the
leaderboard's rows), which keep their field names and full numbers for the code that reads them. Plain Python: no
Prefect, no Ray.
"""

from __future__ import annotations

from typing import Any

from tasks.model.recipes import Recipe

NONE = "—"
TEST = "Test accuracy (%)"
REPORT_TEST = "Report's test accuracy (%)"
DELTA = "Δ vs report (points)"

Row = dict[str, str]


def decimals(value: float | None) -> str:
    """A number for reading: two decimals, thousands separated ("1,234.50"); "—" for none."""
    return NONE if value is None else f"{value:,.2f}"


def count(value: int | None) -> str:
    """A whole number with thousands separated ("409,034"); "—" for none."""
    return NONE if value is None else f"{int(value):,}"


def points(value: float | None) -> str:
    """A difference in percentage points, signed ("+0.31", "-17.60"); "—" for none."""
    return NONE if value is None else f"{value:+,.2f}"


def percent(fraction: float | None) -> str:
    """A fraction (0.5633333325386047) as a percentage for reading ("56.33")."""
    return NONE if fraction is None else decimals(100 * fraction)


def run_table(rows: list[dict[str, Any]]) -> list[Row]:
    """`fmnist run`'s Table 1 (tasks.runs.reporting.table1_rows) for people: ours beside the report's."""
    return [{"Model": row["model"],
             TEST: decimals(row["test_acc"]),
             REPORT_TEST: decimals(row["report_test_acc"]),
             DELTA: points(row["test_acc_diff"]),
             "Train accuracy (%)": decimals(row["train_acc"]),
             "Report's train accuracy (%)": decimals(row["report_train_acc"]),
             "Epochs": count(row["epochs"]),
             "Report's epochs": count(row["report_epochs"]),
             "Parameters": count(row["params"]),
             "Seconds per epoch": decimals(row["sec_per_epoch"])}
            for row in rows]


def search_table(rows: list[dict[str, Any]]) -> list[Row]:
    """`fmnist search`'s Table 1 (tasks.tune.search.search_table_rows) for people: the winners' test accuracy over
    their seeds beside the report's, and the winning recipe in words."""
    return [{"Model": row["model"],
             "Test accuracy (%, mean ± std over seeds)": f"{decimals(row['test_acc_mean'])} ± "
                                                         f"{decimals(row['test_acc_std'])}",
             REPORT_TEST: decimals(row["report_test_acc"]),
             DELTA: points(row["test_acc_diff"]),
             "Seeds": count(row["seeds"]),
             "Validation accuracy (%, mean)": decimals(row["val_acc_mean"]),
             "Epochs": count(row["epochs"]),
             "Parameters": count(row["params"]),
             "Recipe": Recipe(**row["recipe"]).describe()}
            for row in rows]


def leaderboard_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each architecture's trials together (in the order searched), this search's first, best final-epoch
    validation accuracy first."""
    architectures = list(dict.fromkeys(row["architecture"] for row in rows))
    return sorted(rows, key=lambda row: (architectures.index(row["architecture"]), not row.get("new", True),
                                         -(row["val_accuracy"] or 0.0)))


def leaderboard_table(rows: list[dict[str, Any]]) -> list[Row]:
    """The search's leaderboard (tasks.tune.search.leaderboard_rows, with the warm-start rows) for people: the
    validation accuracy in percent, the recipe in words, where an earlier search's trial came from."""
    return [{"Architecture": row["architecture"],
             "Final validation accuracy (%)": percent(row["val_accuracy"]),
             "Best validation accuracy (%)": percent(row["best_val_accuracy"]),
             "Epochs": count(row["epochs"]),
             "Ended": row["ended"],
             "Recipe": Recipe(**row["config"]).describe(),
             "Trial": str(row["trial_id"]),
             "From": "this search" if row.get("new", True) else f"search {row.get('run_id')}"}
            for row in leaderboard_order(rows)]


def log_text(markdown: str) -> str:
    """A markdown summary as one log record: its lines without the blank ones (a log reads line by line)."""
    return "\n".join(line for line in markdown.splitlines() if line.strip())
