"""Built-in mask updaters. Importing this package registers them; each file is one method family."""

from . import bidst, dense, mest, rigl, rigl_itop, set, snfs, static  # noqa: F401
from . import deep_r, dsr, lt  # noqa: F401  (DSR, Deep-R, Lottery Ticket)
from . import pruning_at_init  # noqa: F401  (SNIP, GraSP, SynFlow)
from . import granet, sr_ste, srigl, topkast  # noqa: F401
from . import small_dense  # noqa: F401  (RigL's Small-Dense baseline)
