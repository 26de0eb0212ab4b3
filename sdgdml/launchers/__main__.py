"""The local launcher's child process (``python -m sdgdml.launchers ARGV``): one run."""
import sys

from . import TrainJob

TrainJob(sys.argv[1:])()
