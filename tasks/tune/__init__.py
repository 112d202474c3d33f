"""Ray and Ray Tune: joining and checking the cluster (cluster), the trials of a run (fanout), the recipe
search and the retraining of its winners (search), the trials' live table (progress), Tune's saved state
(tune_state). The driver side only: what runs inside a trial is tasks.model.training."""
