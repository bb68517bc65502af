"""A script that runs the rdistill CLI and can kill its own process mid-run, as an out-of-memory killer
or a dead node would (used by test_resume and test_distributed).

KILL_AT=arm:step: SIGKILL inside that step of that arm (0-based arm index), after the optimizer step,
before its metrics line and checkpoint. KILL_IN_EVAL=1: SIGKILL when the first arm starts evaluating.
KILL_RANK=r: only the process of that torchrun rank kills itself.
"""

import textwrap

LAUNCHER = textwrap.dedent("""
    import os, signal, sys
    kill = os.environ.get("KILL_AT")
    mine = os.environ.get("KILL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0")
    if kill and mine:
        import rdistill.train as train
        arm_index, step = (int(x) for x in kill.split(":"))
        real_init, real_account, seen = train.Trainer.__init__, train.Trainer.account, []

        def init(self, *a, **k):
            seen.append(self)
            real_init(self, *a, **k)

        def account(self, *a, **k):
            rec = real_account(self, *a, **k)
            if len(seen) == arm_index + 1 and self.steps == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return rec

        train.Trainer.__init__, train.Trainer.account = init, account
    if os.environ.get("KILL_IN_EVAL") and mine:
        import rdistill.run as run

        def generate_answers(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)

        run.generate_answers = generate_answers
    from rdistill.cli.main import main
    sys.argv = ["rdistill", *sys.argv[1:]]
    main()
""")


def write_launcher(folder) -> str:
    """LAUNCHER as a script file in ``folder`` (torchrun runs a script path); returns its path."""
    path = folder / "launch_rdistill.py"
    path.write_text(LAUNCHER)
    return str(path)
