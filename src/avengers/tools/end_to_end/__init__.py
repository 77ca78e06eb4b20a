"""``avengers evaluate``: the whole recipe (routing + voting) measured on benchmarks with gold answers.

Generate once, vote many times: every sample of every model is recorded (:mod:`.samples`, the recorded-samples
format), then every strategy of the registry in :mod:`avengers.core.ensemble` is replayed on the recording with
the project's own router (fitted on the calibration split) and voter (:mod:`.voting`).
"""
