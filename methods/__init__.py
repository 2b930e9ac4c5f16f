"""Built-in mask updaters. Importing this package registers them; each file is one method family."""

from . import dense, rigl, set, static  # noqa: F401
from . import bidst  # noqa: F401
from . import mest, rigl_itop, snfs  # noqa: F401
