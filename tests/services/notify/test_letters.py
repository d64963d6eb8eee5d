"""Letters for residents without a digital channel (the post channel): one print-ready PDF per notice under
``<data_dir>/post``, in Korean, with the resident's name and address and nothing else about them; listed for the
office, which downloads (audited) and marks them sent; administrators only."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from services.notify.channels import ChannelError
from services.notify.letters import LetterPrinter, Recipient
from services.notify.models import Letter
from services.notify.rendering import MessageInput, Renderer
from tests.services.notify import support as f
from tests.services.notify.support import Producer
from tests.support.intake_server import IntakeServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

PHONE = "+82 10-5555-0101"


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


async def test_a_resident_without_a_digital_channel_gets_a_printed_letter_the_office_posts(
    notify: RunningService, producer: Producer, intake: IntakeServer, notify_settings: dict[str, Any]
) -> None:
    # Two residents chose letters at intake; the first also gave a phone number, which a letter never shows.
    first = await intake.register(phone=PHONE, channels=("post",))
    second = await intake.register(channels=("post",))
    await intake.update(second, name="이영호", address="서울특별시 마포구 월드컵로 212, 3층")
    online = await intake.register(email="online@example.kr", channels=("email",))
    applications = {resident: uuid.uuid4() for resident in (first, second, online)}
    for resident, application in applications.items():
        await producer.publish(f.submitted(resident, application))

    admin = notify.auth("admin", subject="admin-post-room")

    async def listed() -> list[dict[str, Any]]:
        response = await notify.client.get("/v1/letters", headers=admin)
        assert response.status_code == 200, response.text
        letters: list[dict[str, Any]] = response.json()
        return letters

    await wait_until(lambda: _count(listed, 2))
    letters = {uuid.UUID(letter["resident_id"]): letter for letter in await listed()}
    assert set(letters) == {first, second}, "only residents who chose post get letters"
    assert all(letter["status"] == "to_send" and letter["pages"] >= 1 for letter in letters.values())

    post_room = Path(notify_settings["data_dir"]) / "post"
    printed = {}
    for resident, letter in letters.items():
        on_disk = post_room / letter["file_name"]
        assert on_disk.is_file(), on_disk
        response = await notify.client.get(f"/v1/letters/{letter['id']}/pdf", headers=admin)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pdf"
        assert response.content == on_disk.read_bytes()
        assert response.content.startswith(b"%PDF-")
        printed[resident] = text_of(response.content)

    mine = printed[first]
    assert "김민지 귀하" in mine
    assert "서울특별시 종로구 삼봉로 43" in mine
    assert "신청이 접수되었습니다" in mine, "the notice itself, in Korean"
    assert f"applications/{applications[first]}" in mine
    for never in (PHONE, "5555", str(first), str(second), "이영호", "월드컵로", "online@example.kr"):
        assert never not in mine, f"{never!r} printed on the first resident's letter"
    theirs = printed[second]
    assert "이영호 귀하" in theirs
    assert "서울특별시 마포구 월드컵로 212, 3층" in theirs
    assert "김민지" not in theirs
    assert "삼봉로" not in theirs

    # The post channel's delivery is sent (handed to the post room) and announced as such.
    deliveries = await notify.client.get("/v1/notification-deliveries", params={"channel": "post"}, headers=admin)
    assert sorted((d["resident_id"], d["status"]) for d in deliveries.json()) == sorted(
        [(str(first), "sent"), (str(second), "sent")]
    )

    # The office posts the first; it leaves the list of letters to send.
    letter_id = letters[first]["id"]
    sent = await notify.client.post(f"/v1/letters/{letter_id}/sent", headers=admin)
    assert (sent.status_code, sent.json()["status"], sent.json()["sent_by"]) == (200, "sent", "admin-post-room")
    again = await notify.client.post(f"/v1/letters/{letter_id}/sent", headers=admin)
    assert again.status_code == 409
    assert [entry["id"] for entry in await listed()] == [letters[second]["id"]]
    done = await notify.client.get("/v1/letters", params={"status": "sent"}, headers=admin)
    assert [entry["id"] for entry in done.json()] == [letter_id]

    # Reading a letter is reading the resident's name and address: it is in their access log.
    log = await notify.client.get("/v1/access-log", headers=notify.auth("resident", resident_id=first))
    assert [(e["actor"], e["action"], e["record_type"], e["record_id"], e["purpose"]) for e in log.json()["items"]] == [
        ("admin-post-room", "read", "letter", letter_id, "letter printing")
    ]

    # Only administrators reach the post room; what they may not see is not found.
    callers = {
        "the resident": (notify.auth("resident", resident_id=first), 403),
        "caseworker": (notify.auth("caseworker", offices=["JN-WEL"]), 403),
        "partner": (notify.auth("partner", partner_id="saebom-ngo"), 403),
        "service": (notify.auth("service", service="intake"), 403),
        "anonymous": ({}, 401),
    }
    failures = []
    for method, path in [("GET", "/v1/letters"), ("GET", f"/v1/letters/{letter_id}/pdf"),
                         ("POST", f"/v1/letters/{letters[second]['id']}/sent")]:  # fmt: skip
        for who, (headers, expected) in callers.items():
            response = await notify.client.request(method, path, headers=headers)
            if response.status_code != expected:
                failures.append(f"{method} {path} as {who}: {response.status_code}, expected {expected}")
    assert failures == []
    unknown = uuid.uuid4()
    assert (await notify.client.get(f"/v1/letters/{unknown}/pdf", headers=admin)).status_code == 404
    assert (await notify.client.post(f"/v1/letters/{unknown}/sent", headers=admin)).status_code == 404
    assert (await notify.client.get("/v1/letters", params={"status": "lost"}, headers=admin)).status_code == 422
    assert await notify.count(Letter) == 2


async def _count(listed: Any, expected: int) -> bool:
    return len(await listed()) == expected


async def test_an_english_letter_and_a_missing_font_is_a_failure_to_retry(tmp_path: Path) -> None:
    rendered = Renderer("https://onestop.example.kr").render(
        MessageInput("application.withdrawn", "en", str(uuid.uuid4()), [{"withdrawn_at": "2026-11-20T09:00:00+00:00"}])
    )
    recipient = Recipient(name="Maria Santos", address="12 Itaewon-ro, Yongsan-gu, Seoul")
    printer = LetterPrinter(tmp_path / "post", Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf"))
    letter = await printer.print(
        delivery_id=uuid.uuid4(), recipient=recipient, rendered=rendered, language="en", day=dt.date(2026, 11, 20)
    )
    text = text_of(printer.path(letter.file_name).read_bytes())
    assert "Maria Santos" in text
    assert "12 Itaewon-ro, Yongsan-gu, Seoul" in text
    assert "20 November 2026" in text
    assert rendered.subject in text
    assert [p.name for p in (tmp_path / "post").iterdir()] == [letter.file_name], "no temporary file left behind"

    without = LetterPrinter(tmp_path / "elsewhere", tmp_path / "no-such-font.ttf")
    with pytest.raises(ChannelError) as refused:
        await without.print(delivery_id=uuid.uuid4(), recipient=recipient, rendered=rendered, language="en",
                            day=dt.date(2026, 11, 20))  # fmt: skip
    assert refused.value.permanent is False, "installing the font fixes it: the letter waits and is tried again"
    assert not (tmp_path / "elsewhere").exists()


def _printing_children() -> set[int]:
    """The pids of this process's children that print a letter (services.notify.letter_pdf)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == os.getpid() and b"services.notify.letter_pdf" in command:
            found.add(int(stat.parent.name))
    return found


async def test_a_print_cancelled_midway_ends_its_child_process(tmp_path: Path) -> None:
    """notify stopping while a letter prints cancels the print: the child process goes with it, its pipes closed in
    the running loop (left behind, they were closed by the garbage collector on a loop already closed)."""
    rendered = Renderer("https://onestop.example.kr").render(
        MessageInput("application.withdrawn", "ko", str(uuid.uuid4()), [{"withdrawn_at": "2026-11-20T09:00:00+00:00"}])
    )
    printer = LetterPrinter(tmp_path / "post", Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf"))
    letter = printer.print(
        delivery_id=uuid.uuid4(), recipient=Recipient("김영희", "서울 종로구 1"), rendered=rendered, language="ko",
        day=dt.date(2026, 11, 20),
    )  # fmt: skip
    printing = asyncio.create_task(letter)
    await wait_until(lambda: bool(_printing_children()))
    printing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await printing
    assert not _printing_children(), "the child was ended and reaped before the cancellation went on"
    assert not (tmp_path / "post").exists() or not list((tmp_path / "post").glob("*.pdf"))


def test_printing_leaves_the_pdf_library_out_of_notify_s_own_process(tmp_path: Path) -> None:
    # fpdf2 with Pillow, numpy and fontTools costs notify ~40 MB: the letter is composed in a child process instead.
    script = f"""
import asyncio, datetime as dt, sys, uuid
from pathlib import Path
import services.notify.main
from services.notify.letters import LetterPrinter, Recipient
from services.notify.rendering import MessageInput, Renderer
rendered = Renderer("https://onestop.example.kr").render(
    MessageInput("application.withdrawn", "ko", str(uuid.uuid4()), [{{"withdrawn_at": "2026-11-20T09:00:00+00:00"}}])
)
printer = LetterPrinter(Path({str(tmp_path)!r}), Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf"))
letter = asyncio.run(printer.print(delivery_id=uuid.uuid4(), recipient=Recipient("김영희", "서울 종로구 1"),
                                   rendered=rendered, language="ko", day=dt.date(2026, 11, 20)))
print(letter.pages, printer.path(letter.file_name).stat().st_size > 0, "fpdf" in sys.modules, "numpy" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True", "False", "False"]
