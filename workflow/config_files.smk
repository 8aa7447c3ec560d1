# The config files, read strictly (rshash.config.load_config_file) before Snakemake
# merges them, since its own reader keeps the last value of a key given twice and
# names neither file nor line for a syntax error: a duplicate key at any level, a tab
# or a syntax error stops with one line naming the file and the line. (Snakemake reads
# each --configfile before the Snakefile runs, so a syntax error there gets its own
# message; a duplicate key there stops here.)
from snakemake.exceptions import WorkflowError

from rshash import RshashError
from rshash.config import check_config_files

CONFIG_FILE = "config.yaml"

try:
    check_config_files([CONFIG_FILE, *workflow.overwrite_configfiles])
except RshashError as err:
    raise WorkflowError(str(err)) from None
