"""DGL: train and evaluate text-video retrieval.

    python main.py --do_train 1 --datatype msrvtt ...            # one GPU or the CPU
    torchrun --nproc_per_node=4 main.py --do_train 1 ...          # DDP (add --nnodes for several machines)
    python main.py --do_eval 1 --resume ckpt.best.pth.tar ...     # official or our checkpoints

Flags keep the official names (see utils/config.py); the logic lives in utils/run.py.
"""
from utils.config import parse_args
from utils.run import run

if __name__ == "__main__":
    run(parse_args())
