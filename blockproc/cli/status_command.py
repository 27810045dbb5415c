"""``blockproc status``: print what :func:`blockproc.output.status` says of an output,
verify it or chart its timeline (the library reads; this module only prints)."""

from __future__ import annotations

import json
from typing import Any

import click

from blockproc._units import format_size
from blockproc.cli.options import (
    _format_counters,
    _parse_key_values,
    _plural,
)
from blockproc.output import SUCCESS, OutputStatus
from blockproc.output import status as output_status
from blockproc.output import verify as verify_output


@click.command(short_help="Show a finished job's manifest; verify it or chart it.")
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--verify", is_flag=True, help="Check every part-file's size and CRC-32.")
@click.option("--timeline", "timeline", metavar="PATH", default=None,
              help="Draw every attempt per worker over time into the local file PATH (a PNG "
                   "chart; needs matplotlib: pip install \"blockproc[plot]\").")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option for OUTPUT (repeatable).")
def status(output: str, as_json: bool, verify: bool, timeline: str | None,
           storage_option: tuple[str, ...]) -> None:
    """Show what the manifest of OUTPUT says (exit 1 if the job is unfinished)."""
    options = _parse_key_values(storage_option, "--storage-option")
    st = output_status(output, options)
    if not st.is_finished:
        _echo_unfinished(output, st)
        raise SystemExit(1)
    assert st.manifest is not None
    if as_json:
        click.echo(json.dumps(dict(st.manifest), indent=1))
    else:
        _echo_finished(output, st)
    if timeline is not None:
        _draw_timeline(output, st, timeline, quiet=as_json)
    if verify:
        bad = verify_output(output, options)
        if bad:
            click.echo(f"verify: {len(bad)} part-files missing or changed: {', '.join(bad)}")
            raise SystemExit(1)
        click.echo(f"verify: all {len(st.manifest['blocks'])} part-files match the manifest")


def _echo_unfinished(output: str, st: OutputStatus) -> None:
    from blockproc import report

    click.echo(f"unfinished: {st.num_committed} of {st.num_blocks} blocks committed, no "
               f"{SUCCESS}; rerun the same `blockproc run ... -o {output}` command with "
               f"--resume to finish it")
    if st.num_committed:
        click.echo(f"attempts: the committed blocks took "
                   f"{_plural(st.committed_attempts, 'attempt')}")
    if st.counters:
        click.echo(f"counters so far: {_format_counters(st.counters)}")
    for line in report.what_was_kept(output, st.bad_records, st.blocks_with_stderr,
                                     st.num_committed):
        click.echo(line)
    if st.lock_holder:
        click.echo(f"lock: held by job {st.lock_holder.get('job_id')} (pid "
                   f"{st.lock_holder.get('pid')} on {st.lock_holder.get('host')})")


def _echo_finished(output: str, st: OutputStatus) -> None:
    from blockproc import report

    manifest = st.manifest or {}
    totals = manifest["totals"]
    click.echo(f"job {manifest['job_id']} finished {manifest['finished']} in "
               f"{manifest['seconds']:.2f}s on {manifest['executor']} "
               f"({manifest['workers']} workers)")
    click.echo(f"inputs: {len(manifest['inputs'])} files, "
               f"{format_size(sum(f['size'] for f in manifest['inputs']))}; "
               f"format {manifest['format']['name']}")
    click.echo(f"blocks: {totals['num_blocks']}; records {totals['records_in']:,} in, "
               f"{totals['records_out']:,} out; {format_size(totals['bytes_read'])} read, "
               f"{format_size(totals['bytes_written'])} written")
    if st.counters:
        click.echo(f"counters: {_format_counters(st.counters)}")
    runs = manifest.get("runs") or []
    for line in _runs_lines(runs):
        click.echo(line)
    for line in report.what_was_kept(output, st.bad_records, st.blocks_with_stderr,
                                     st.num_blocks):
        click.echo(line)
    if not st.attempts:
        return
    by_status = st.attempts_by_status  # the manifest's header: no attempt row is read
    counts = ", ".join(f"{n} {s}" for s in report.STATUSES if (n := by_status.get(s, 0)))
    click.echo(f"attempts: {len(st.attempts)} ({counts}); "
               f"{by_status.get('speculative', 0)} speculative")
    if st.earlier_blocks and not runs:
        in_all = _plural(st.num_attempts, "attempt")
        click.echo(f"resumed: earlier runs made {_plural(st.earlier_attempts, 'attempt')} and "
                   f"committed {_plural(st.earlier_blocks, 'block')}; {in_all} in all runs")


SHOWN_RUNS = 10
"""The runs of an appended output ``status`` lists (the latest ones)."""


def _runs_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The lines that show the runs of an output extended with ``--if-exists append``."""
    if not runs:
        return []
    lines = [f"runs: {len(runs)} (the output was extended with --if-exists append)"]
    if len(runs) > SHOWN_RUNS:
        lines.append(f"  ... {len(runs) - SHOWN_RUNS} earlier runs")
    for run in runs[-SHOWN_RUNS:]:
        inputs = run.get("inputs")
        read = (f"{_plural(len(inputs), 'file')} read" if isinstance(inputs, list) else
                f"{_plural(int(inputs or 0), 'file')} read")
        first = f" from {run['first_part']}" if run.get("first_part") else ""
        superseded = (f", superseded {', '.join(run['superseded'])}"
                      if run.get("superseded") else "")
        lines.append(f"  {run.get('job_id')} finished {run.get('finished')}: "
                     f"{_plural(int(run.get('num_blocks', 0)), 'block')}{first}, "
                     f"{read}{superseded}")
    return lines


def _draw_timeline(output: str, st: OutputStatus, timeline: str, *, quiet: bool) -> None:
    from blockproc import report

    manifest, attempts = st.manifest or {}, st.attempts
    if not attempts:
        raise click.ClickException(
            f"the manifest of {output!r} records no attempts (an older blockproc wrote "
            f"it); rerun the job to draw its timeline")
    try:
        report.draw_timeline(attempts, timeline, title=f"blockproc job "
                             f"{manifest['job_id']}: {len(attempts)} attempts, "
                             f"{manifest['seconds']:.2f}s")
    except (ImportError, OSError) as exc:
        raise click.ClickException(f"cannot draw the timeline: {exc}") from None
    if not quiet:
        click.echo(f"timeline: {len(attempts)} attempts on "
                   f"{len({a.worker for a in attempts})} workers, drawn to {timeline}")

