"""The letter's PDF, made in a short-lived child process (``python -m services.notify.letter_pdf``).

fpdf2 with its image and font libraries (Pillow, numpy, fontTools) adds about 40 MB to the process that imports it,
and a Korean font loaded for a letter adds more. Letters are rare next to the digital channels, so notify itself
never imports them: each letter is composed here, in a process that ends with it. The parent passes what is printed
on stdin (never in the arguments, which other users of the machine can list) and reads ``{"file_name", "pages"}``
back on stdout. Only the standard library and fpdf2 are imported here, so the child starts quickly.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fpdf import FPDF

# fontTools tells, for every letter, which tables of the font it leaves out of the subset: noise, not news.
logging.getLogger("fontTools.subset").setLevel(logging.ERROR)

SENDER = {"ko": "원스톱 행정서비스 (OneStop)", "en": "OneStop public services"}
SALUTATION = {"ko": "{name} 귀하", "en": "{name}"}
FOOTER = {
    "ko": "이 안내문은 디지털 알림 대신 우편으로 보내 드립니다. 문의는 가까운 주민센터 창구로 해 주십시오.",
    "en": "This notice is sent by post instead of a digital message. For questions, visit your community centre.",
}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip


def _dated(day: dt.date, language: str) -> str:
    if language == "ko":
        return f"{day.year}년 {day.month}월 {day.day}일"
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def compose(
    *, name: str, address: str, subject: str, text: str, language: str, day: dt.date, font: Path, bold_font: Path | None
) -> FPDF:
    lang = language if language in SENDER else "ko"
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_creator("OneStop notify")
    pdf.set_title(subject)  # the notice's title: no name, no address
    pdf.set_lang("ko-KR" if lang == "ko" else "en")
    pdf.add_font("letter", fname=str(font))
    bold = bold_font if bold_font is not None and bold_font.is_file() else font
    pdf.add_font("letter", style="B", fname=str(bold))
    pdf.set_margins(left=25, top=20, right=20)
    pdf.set_auto_page_break(auto=True, margin=25)
    pdf.add_page()

    pdf.set_font("letter", size=9)
    pdf.cell(0, 5, SENDER[lang], new_x="LMARGIN", new_y="NEXT")
    # The address block where a DL window envelope (and Korea Post's 규격봉투) shows it.
    pdf.set_xy(25, 50)
    pdf.set_font("letter", "B", 12)
    pdf.multi_cell(90, 6, SALUTATION[lang].format(name=name), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("letter", size=11)
    pdf.set_x(25)
    pdf.multi_cell(90, 6, address, align="L", new_x="LMARGIN", new_y="NEXT")

    pdf.set_xy(25, 95)
    pdf.set_font("letter", size=10)
    pdf.cell(0, 6, _dated(day, lang), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("letter", "B", 14)
    pdf.multi_cell(0, 8, subject, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("letter", size=11)
    pdf.multi_cell(0, 6.5, text.strip(), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    pdf.set_font("letter", size=8.5)
    pdf.multi_cell(0, 5, FOOTER[lang], align="L", new_x="LMARGIN", new_y="NEXT")
    return pdf


def write(order: dict[str, Any]) -> dict[str, Any]:
    """Write the letter (to a temporary name, then renamed: the post room never sees half a file)."""
    bold = order.get("bold_font")
    pdf = compose(
        name=order["name"],
        address=order["address"],
        subject=order["subject"],
        text=order["text"],
        language=order["language"],
        day=dt.date.fromisoformat(order["day"]),
        font=Path(order["font"]),
        bold_font=Path(bold) if bold else None,
    )
    directory = Path(order["directory"])
    directory.mkdir(parents=True, exist_ok=True)
    file_name = f"{order['delivery_id']}.pdf"
    tmp = directory / f".{file_name}.tmp"
    tmp.write_bytes(bytes(pdf.output()))
    os.replace(tmp, directory / file_name)
    return {"file_name": file_name, "pages": pdf.page_no()}


def main() -> int:
    result = write(json.load(sys.stdin))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
