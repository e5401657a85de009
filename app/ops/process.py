# TEMPORARY shim during the reshaping (removed before commit): app.ops.process is now app.ops.tuning.
import sys

from app.ops import tuning

sys.modules[__name__] = tuning
