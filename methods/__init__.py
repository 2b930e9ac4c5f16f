"""Built-in mask updaters. Importing this package registers them; each file is one method family."""

from . import bidst, dense, mest, rigl, rigl_itop, set, snfs, static  # noqa: F401
from . import granet, srigl, topkast  # noqa: F401
