import sys

from terok_install.cli import main

sys.exit(main())
