import sys

from cdm_core.cli.main import main

sys.exit(main())
