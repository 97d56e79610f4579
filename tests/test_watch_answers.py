"""Which drift hints an observation answers (the daemon drops nothing else), and the hosts-file
watcher's hints, from real inotify events in a temporary folder."""

from __future__ import annotations

import queue
from pathlib import Path

from reconciler.watch.daemon import Answered, Pending
from reconciler.watch.events import Drift
from reconciler.watch.hostsfiles import HostsFiles


def test_only_a_later_observation_that_compared_the_object_answers_a_hint() -> None:
    web = Drift(1.0, containers=frozenset({"web"}))
    table = Drift(1.0, nft=True)
    lost = Drift(1.0, full=True)
    assert Answered(2.0).answers(web) and Answered(2.0).answers(table) and Answered(2.0).answers(lost)
    # Read after the observation started: the observation may not have seen the change.
    assert not Answered(1.0).answers(web) and not Answered(0.5).answers(table)
    # A partial observation answers only what it compared.
    part = Answered(2.0, frozenset({"web"}), host_level=False)
    assert part.answers(web) and not part.answers(table) and not part.answers(lost)
    assert not part.answers(Drift(1.0, containers=frozenset({"db"})))
    assert Answered(2.0, frozenset({"web"})).answers(table)
    assert not Answered(2.0, frozenset({"web"})).answers(Drift(1.0, containers=frozenset({"web", "db"})))
    # A drift repair reads our nft tables only for an nft hint, and nothing else for nft hints alone.
    veth = Answered(2.0, frozenset({"web"}), host_level=True, nft=False)
    assert veth.answers(web) and veth.answers(Drift(1.0, host=True)) and not veth.answers(table)
    tables = Answered(2.0, frozenset(), host_level=False, hosts=frozenset(), nft=True)
    assert tables.answers(table) and not tables.answers(web) and not tables.answers(Drift(1.0, host=True))
    assert not tables.answers(Drift(1.0, containers=frozenset({"web"}), nft=True))


def test_hosts_file_hints_are_answered_by_what_read_the_files() -> None:
    web_hosts = Drift(1.0, hosts=frozenset({"web"}))
    # A verification that read web's and db's hosts files, and web's namespace only.
    verified = Answered(2.0, frozenset({"web"}), host_level=True, hosts=frozenset({"web", "db"}))
    assert verified.answers(web_hosts) and verified.answers(Drift(1.0, hosts=frozenset({"db"})))
    assert not verified.answers(Drift(1.0, containers=frozenset({"db"})))  # db's namespace: not read
    assert not verified.answers(Drift(1.0, hosts=frozenset({"cache"})))
    # Every file read (a whole host level), or none but the containers' (a host level that differed).
    assert Answered(2.0, frozenset({"db"})).answers(web_hosts)
    assert not Answered(2.0, frozenset({"db"}), host_level=False).answers(web_hosts)
    assert Answered(2.0, frozenset({"web"}), host_level=False).answers(web_hosts)
    pending = Pending()
    pending.add(web_hosts)
    assert pending.hosts == {"web"} and not pending.containers and not pending.full


def test_lost_events_make_the_next_reconcile_full() -> None:
    pending = Pending()
    pending.add(Drift(1.0, containers=frozenset({"web"})))
    assert pending and not pending.full
    pending.add(Drift(1.0, full=True))
    assert pending.full and pending.triggers == {"drift"}


def test_hosts_file_edits_name_their_container(tmp_path: Path) -> None:
    top = tmp_path / "netns"
    (top / "web").mkdir(parents=True)
    (top / "web" / "hosts").write_text("ours\n")
    hints: queue.Queue[Drift] = queue.Queue()
    HostsFiles(hints.put, str(top)).start()

    with open(top / "web" / "hosts", "a") as f:
        f.write("10.99.0.1 intruder\n")
    until(hints, "web")
    # A folder made later is watched before its hint: an edit right after it is reported too. (One
    # write may come as several events, read apart under load: late repeats of web's, alone or read
    # with the new folder's, are no error.)
    (top / "db").mkdir()
    before, found = until(hints, "db")
    assert all(seen == {"web"} for seen in before) and found <= {"web", "db"}
    (top / "db" / "hosts").write_text("x\n")
    until(hints, "db")
    while not hints.empty() or _more(hints):
        hints.get_nowait()
    # Another file beside a hosts file is not ours: the next hint is db's, not web's.
    (top / "web" / ".hosts.swp").write_text("an editor's temporary")
    (top / "db" / "hosts").unlink()
    assert until(hints, "db") == ([], {"db"})


def until(hints: queue.Queue[Drift], container: str) -> tuple[list[set[str]], set[str]]:
    """The containers of the hints before the first that names `container` (within 10 s), and
    that hint's."""
    before = []
    while container not in (seen := hints.get(timeout=10).hosts):
        before.append(set(seen))
    return before, set(seen)


def _more(hints: queue.Queue[Drift]) -> bool:
    """Whether another hint comes within a moment (the events of one write may come in parts)."""
    try:
        hints.put(hints.get(timeout=0.2))
    except queue.Empty:
        return False
    return True
