"""``python -m pipelines --spec ... --input ... --workdir ... [Beam flags]``."""

import logging

from pipelines.run import run

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
