"""Which waiting trial a scheduler starts next: Tune's FIFO rule, looking at the live trials only."""

from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler


class LiveChoice:
    """Tune's FIFO choice of the next trial to start, the first PENDING (else PAUSED) trial in the
    order trials were added, made among the live trials only. Tune's looks at every trial of the
    experiment at every step of its loop: O(trials) a step, 0.14 ms per result at 1,000 trials
    (benchmarks/scale.py). Mixed into every scheduler `build_scheduler` makes."""

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        added = self.__dict__.setdefault("_added", {})  # a scheduler pickled before this has none
        added.setdefault(trial.trial_id, len(added))

    def choose_trial_to_run(self, tune_controller):
        added = self.__dict__.get("_added", {})
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            ready = [t for t in live if t.status == status]
            if ready:  # Tune's trial ids end in a counter, so unknown ones (none expected) still go in order
                return min(ready, key=lambda t: (added.get(t.trial_id, math.inf), t.trial_id))
        return None


class FIFO(LiveChoice, FIFOScheduler):
    """Tune's FIFO scheduler with `LiveChoice`."""
