"""What one trial trains: the report's architectures as layer lists (architectures), training recipes as data
(recipes), the per-epoch row order and augmentation (protocol), the trainable that runs inside a Ray trial
(training), and safe loading of published models (artifacts). No Prefect and no Ray Tune set-up here."""
