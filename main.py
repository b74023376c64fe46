"""DGL: train and evaluate text-video retrieval.

    python main.py --do_train 1 --datatype msrvtt ...            # the CPU, one GPU, or every visible GPU
    torchrun --nproc_per_node=4 main.py --do_train 1 ...          # DDP (add --nnodes for several machines)
    python main.py --do_eval 1 --resume ckpt.best.pth.tar ...     # official or our checkpoints

Flags keep the official names (utils/flags.py, utils/config.py); the logic lives in utils/run.py. With several
visible GPUs and no launcher, main.py re-runs itself under torchrun, one process per GPU, as the official
code did (CUDA_VISIBLE_DEVICES chooses the GPUs). A user error ends it with one line and exit code 2
(utils/cli.py); --debug shows the traceback.
"""
import os
import sys

from utils import cli
from utils.config import build_config, check_inputs
from utils.run import run
from utils.runtime import describe, relaunch_on_all_gpus


def main(argv: list[str]) -> None:
    config = build_config(argv)  # bad flags and missing files stop here, before any process is started
    check_inputs(config)
    command = relaunch_on_all_gpus(argv, __file__)
    if command is not None:
        print(f"several GPUs and no launcher: running {describe(command)}", file=sys.stderr, flush=True)
        os.execv(command[0], command)
    run(config)


if __name__ == "__main__":
    sys.exit(cli.run(main))
