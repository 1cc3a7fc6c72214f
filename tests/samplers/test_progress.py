"""The run-wide progress bar: totals across files, counted calls, the summary line."""

import torch

from meddiff.samplers.progress import CountingDenoiser, Progress, calls_per_slice


def test_total_extrapolates_unread_files_and_firms_up():
    p = Progress(enabled=False, files=3)
    p.expect(10)
    assert p.bar.total == 30  # two files not read yet, assumed like the first
    p.expect(20)
    assert p.bar.total == 45  # 10 + 20 + one more at their mean
    p.expect(6)
    assert p.bar.total == 36
    p.close()


def test_counting_denoiser_reports_images_and_keeps_the_contract():
    seen = []

    class Den:
        sched = "schedule"

        def __call__(self, x, k, cond):
            return x, 2 * x

    den = CountingDenoiser(Den(), seen.append)
    eps, x0 = den(torch.ones(3, 1, 4, 4), torch.zeros(3), torch.zeros(3, 1, 4, 4))
    assert seen == [3] and den.sched == "schedule" and torch.equal(x0, 2 * eps)


def test_summary_and_calls_per_slice():
    p = Progress(enabled=False, files=1)
    p.expect(4)
    p.advance(4)
    p.slices_done(2)
    line = p.summary()
    assert line.startswith("2 slices, 4 network calls, ") and "peak RSS" in line
    assert calls_per_slice(10) == 10 and calls_per_slice(10, 3) == 28  # RePaint: (10 - 1) * 3 + 1
