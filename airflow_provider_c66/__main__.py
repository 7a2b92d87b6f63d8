"""``python -m airflow_provider_c66``: the command line (:mod:`airflow_provider_c66.cli`)."""

import sys

from airflow_provider_c66.cli import main

sys.exit(main())
