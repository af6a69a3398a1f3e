import dataclasses
import sys

import autocompress.strategies._bayesbits as bb
from autocompress.runner import run_search
from autocompress.settings import load_settings

step = float(sys.argv[2])
original = bb.GateSchedule.of
bb.GateSchedule.of = classmethod(lambda cls, settings: dataclasses.replace(original(settings), multiplier_step=step))
settings = load_settings("studies/resnet20-50KB.yaml", {"mode": "bayesbits", "gate_epochs": 1.0, "final_epochs": 0.3,
                         "output_root": "/tmp/bbruns", "study_name": sys.argv[1]})
run_search(settings, log=print)
