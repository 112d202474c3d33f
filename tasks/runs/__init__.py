"""What a run is and leaves: its claim, stored config and lease (run, lease), the champion gate (champion), each
slot's recent models (history) and the paired statistics both use (paired), Table 1 and the summary (reporting),
the figures (plots), and `fmnist runs` (runlist)."""
