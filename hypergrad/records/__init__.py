"""Records of every run in an Optuna study: configuration, seed, values, curves, environment.

`Records.open(storage, study)` opens or creates a study (a SQLite file by default, a
journal file or any Optuna storage URL otherwise); `record_trial` runs one objective and
records it; `reproduce` re-runs a recorded trial and compares.
"""

from ._distributions import to_optuna_distributions as to_optuna_distributions
from ._environment import environment as environment
from ._environment import same_machine as same_machine
from ._records import EXACT_ATTR as EXACT_ATTR
from ._records import FORBIDDEN_ATTR as FORBIDDEN_ATTR
from ._records import FORMAT as FORMAT
from ._records import Outcome as Outcome
from ._records import Records as Records
from ._records import record_trial as record_trial
from ._records import reference as reference
from ._records import resolve as resolve
from ._records import trial_seed as trial_seed
from ._reproduce import Reproduction as Reproduction
from ._reproduce import reproduce as reproduce
from ._storage import IncompatibleRecordError as IncompatibleRecordError
from ._storage import RecordsError as RecordsError
from ._storage import StorageError as StorageError
from ._storage import StudyNotFoundError as StudyNotFoundError
from ._storage import open_storage as open_storage
