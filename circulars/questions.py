"""Circulars that ask: questions on drafts, households' answers, totals and the answer list.

One answer per (question, household receipt), changeable until the end of the due day
(Asia/Tokyo). Answering also confirms the circular. After the due date only staff may
record an answer, by proxy or from a paper slip, and it is marked late.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from circulars import services
from circulars.models import (
    PROXY_METHODS,
    Answer,
    Circular,
    CircularStatus,
    Question,
    QuestionKind,
    Receipt,
    ReceiptMethod,
)
from circulars.selectors import (
    block_of,
    circular_receipts,
    circular_staff_block_ids,
    receipts_by_block,
)
from communities.models import Block, Household, Member
from communities.selectors import Access, block_chosen, rows_folded
from notifications.broadcast import Event, send_on_commit
from notifications.groups import ledger_block_group, ledger_totals_group

MIN_CHOICES = 2
MAX_CHOICES = 10
MAX_QUESTIONS = 10
MAX_PROMPT = 200
MAX_CHOICE = 60
MAX_TEXT = 500
MAX_PEOPLE = 50
# Staff may record these after the due date, marked late.
LATE_METHODS = frozenset({ReceiptMethod.PAPER, *PROXY_METHODS})
INTEGER = re.compile(r"[0-9]{1,4}")


class QuestionNotFound(Http404):
    """An answer names a question this circular does not ask."""


class AnswersClosed(ValidationError):
    """The due date has passed: residents can no longer answer or change answers."""


def field_name(question: Question | int) -> str:
    """The form field (and error key) of a question: ``q12``."""
    return f"q{question if isinstance(question, int) else question.pk}"


# --- Questions (drafts only) -------------------------------------------------------------


@dataclass(frozen=True)
class QuestionData:
    kind: str
    prompt: str
    choices: list[str] = field(default_factory=list)
    required: bool = False


def _clean_question(data: QuestionData) -> QuestionData:
    errors: dict[str, str] = {}
    if data.kind not in QuestionKind.values:
        errors["kind"] = _("Choose the kind of question.")
    prompt = " ".join(data.prompt.split())
    if not prompt:
        errors["prompt"] = _("Write the question.")
    elif len(prompt) > MAX_PROMPT:
        errors["prompt"] = _("Keep the question under 200 characters.")
    choices = [" ".join(choice.split()) for choice in data.choices]
    choices = [choice for choice in choices if choice]
    if data.kind in (QuestionKind.SINGLE, QuestionKind.MULTIPLE):
        if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
            errors["choices"] = _("Write between 2 and 10 choices, one per line.")
        elif any(len(choice) > MAX_CHOICE for choice in choices):
            errors["choices"] = _("Keep each choice under 60 characters.")
        elif len(set(choices)) != len(choices):
            errors["choices"] = _("Each choice must be different.")
    else:
        choices = []
    if errors:
        raise ValidationError(errors)
    return QuestionData(kind=data.kind, prompt=prompt, choices=choices, required=data.required)


def _check_draft(circular: Circular) -> None:
    if circular.status == CircularStatus.PUBLISHED:
        raise ValidationError(_("Questions can only be changed before publishing."))


@transaction.atomic
def question_add(*, circular: Circular, data: QuestionData) -> Question:
    """Add a question at the end of a draft's questions. The caller checks who may edit."""
    circular = Circular.objects.select_for_update().get(pk=circular.pk)
    _check_draft(circular)
    data = _clean_question(data)
    if circular.questions.count() >= MAX_QUESTIONS:
        raise ValidationError(_("A circular can ask at most 10 questions."))
    last = circular.questions.aggregate(last=Max("position"))["last"]
    return Question.objects.create(
        circular=circular,
        position=(last or 0) + 1,
        kind=data.kind,
        prompt=data.prompt,
        choices=data.choices,
        required=data.required,
    )


@transaction.atomic
def question_update(*, question: Question, data: QuestionData) -> Question:
    circular = Circular.objects.select_for_update().get(pk=question.circular_id)
    _check_draft(circular)
    data = _clean_question(data)
    question.kind, question.prompt = data.kind, data.prompt
    question.choices, question.required = data.choices, data.required
    question.save(update_fields=["kind", "prompt", "choices", "required"])
    return question


@transaction.atomic
def question_remove(*, question: Question) -> None:
    circular = Circular.objects.select_for_update().get(pk=question.circular_id)
    _check_draft(circular)
    question.delete()


def questions_for(*, circular: Circular) -> list[Question]:
    return list(Question.objects.filter(circular=circular).order_by("position", "pk"))


def question_get(*, circular: Circular, question_id: int) -> Question:
    question = Question.objects.filter(circular=circular, pk=question_id).first()
    if question is None:
        raise QuestionNotFound
    return question


# --- Answering ---------------------------------------------------------------------------


def answers_closed(*, circular: Circular, now: datetime | None = None) -> bool:
    """True after the end of the due day in the association's time zone (Asia/Tokyo)."""
    if circular.due_date is None:
        return False
    now = now or timezone.now()
    return timezone.localdate(now, timezone.get_default_timezone()) > circular.due_date


def _index(raw: Any, count: int) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        number = raw
    elif isinstance(raw, str) and INTEGER.fullmatch(raw.strip()):
        number = int(raw.strip())
    else:
        return None
    return number if 0 <= number < count else None


def _is_empty(raw: Any) -> bool:
    return raw is None or raw == "" or raw == [] or raw == {}


def _parse(question: Question, raw: Any) -> Any:
    """The stored value of one raw answer, or ValidationError (a message, no field)."""
    count = len(question.choices)
    if question.kind == QuestionKind.SINGLE:
        items = raw if isinstance(raw, list) else [raw]
        index = _index(items[0], count) if len(items) == 1 else None
        if index is None:
            raise ValidationError(_("Choose one of the choices."))
        return [index]
    if question.kind == QuestionKind.MULTIPLE:
        items = raw if isinstance(raw, list) else [raw]
        indexes = [_index(item, count) for item in items]
        if any(index is None for index in indexes) or len(set(indexes)) != len(indexes):
            raise ValidationError(_("Choose among the choices."))
        return sorted(index for index in indexes if index is not None)
    if question.kind == QuestionKind.TEXT:
        if not isinstance(raw, str):
            raise ValidationError(_("Write the answer as text."))
        text = raw.replace("\r\n", "\n").strip()
        if len(text) > MAX_TEXT:
            raise ValidationError(_("Keep the answer under 500 characters."))
        return text
    # Attendance: {"attending": yes/no, "people": n}.
    if not isinstance(raw, dict):
        raise ValidationError(_("Choose attending or not attending."))
    attending = raw.get("attending")
    if attending in (True, "yes"):
        people_raw = raw.get("people", 1)
        if people_raw in ("", None):
            people_raw = 1
        people = _index(people_raw, MAX_PEOPLE + 1)
        if people is None or people < 1:
            raise ValidationError(_("Write how many people will come (1 to 50)."))
        return {"attending": True, "people": people}
    if attending in (False, "no"):
        return {"attending": False, "people": 0}
    raise ValidationError(_("Choose attending or not attending."))


@dataclass(frozen=True)
class AnswersChanged(Event):
    circular_id: int = 0
    block_id: int = 0
    household_id: int = 0
    version: int = 0


@dataclass(frozen=True)
class AnswersResult:
    receipt: Receipt
    answers: dict[int, Answer]
    late: bool
    confirmed: services.ConfirmResult


@transaction.atomic
def answers_submit(
    *,
    circular: Circular,
    household: Household,
    values: dict[int, Any],
    member: Member | None,
    recorded_by: User | None,
    method: str,
    now: datetime | None = None,
) -> AnswersResult:
    """Save a household's answers (one per question, the last one wins) and confirm.

    ``values`` maps question ids to raw values; a question left out keeps its answer, an
    empty value clears an optional answer. A question of another circular raises
    ``QuestionNotFound`` (a 404); a malformed value a ValidationError keyed by the field
    (``{"q12": ...}``). After the due date only staff recording a paper or proxy answer
    (``recorded_by`` without ``member``) may answer, and the answers are marked late.
    """
    now = now or timezone.now()
    if method not in ReceiptMethod.values:
        raise ValidationError(_("Unknown way of answering."))
    if circular.status != CircularStatus.PUBLISHED:
        raise ValidationError(_("This circular has not been published."))
    questions = {question.pk: question for question in questions_for(circular=circular)}
    if any(question_id not in questions for question_id in values):
        raise QuestionNotFound
    late = answers_closed(circular=circular, now=now)
    staff_record = method in LATE_METHODS and recorded_by is not None and member is None
    if late and not staff_record:
        raise AnswersClosed(
            _("Answers closed at the end of the due date. Please contact your block leader."),
            code="closed",
        )
    # One household, one writer at a time: two phones answering at once cannot both insert.
    receipt = services._receipt_for(circular, household, lock=True)
    existing = {answer.question_id: answer for answer in Answer.objects.filter(receipt=receipt)}
    errors: dict[str, str] = {}
    parsed: dict[int, Any] = {}
    for question_id, raw in values.items():
        question = questions[question_id]
        if _is_empty(raw):
            parsed[question_id] = None
            continue
        try:
            parsed[question_id] = _parse(question, raw)
        except ValidationError as error:
            errors[field_name(question)] = error.messages[0]
    for question in questions.values():
        value = parsed.get(question.pk, existing.get(question.pk))
        if question.required and value is None and field_name(question) not in errors:
            errors[field_name(question)] = _("Answer this question.")
    if errors:
        raise ValidationError(errors)
    for question_id, value in parsed.items():
        answer = existing.get(question_id)
        if value is None:
            if answer is not None:
                answer.delete()
                existing.pop(question_id)
            continue
        if answer is None:
            existing[question_id] = Answer.objects.create(
                question_id=question_id,
                receipt=receipt,
                value=value,
                answered_at=now,
                answered_by=member,
                recorded_by=recorded_by,
                method=method,
                late=late,
            )
        elif answer.value != value:
            Answer.objects.filter(pk=answer.pk).update(
                value=value,
                answered_at=now,
                answered_by=member,
                recorded_by=recorded_by,
                method=method,
                late=late,
                version=F("version") + 1,
            )
            answer.refresh_from_db()
    # The row is locked and the circular checked above: confirm it without reading it again.
    confirmed = services.receipt_confirm_row(
        receipt=receipt, method=method, member=member, recorded_by=recorded_by, now=now
    )
    version = sum(answer.version for answer in existing.values())
    send_on_commit(
        groups=[
            ledger_totals_group(circular.pk),
            ledger_block_group(circular.pk, receipt.block_id),
        ],
        event=AnswersChanged(
            type="answers.changed",
            circular_id=circular.pk,
            block_id=receipt.block_id,
            household_id=household.pk,
            version=version,
        ),
    )
    return AnswersResult(receipt=receipt, answers=existing, late=late, confirmed=confirmed)


@transaction.atomic
def answers_record(
    *,
    circular: Circular,
    household: Household,
    values: dict[int, Any],
    recorded_by: User,
    method: str,
    now: datetime | None = None,
) -> AnswersResult:
    """Staff record a household's answers: a returned paper slip (``PAPER``) or an answer
    given by hand, phone or visit (``PROXY_METHODS``).

    They count exactly as the household's own answers and confirm the circular as the
    paper sign-off or proxy tap would. After the due date they are still taken, marked late.
    The caller checks that the household is one the staff member may see.
    """
    if method not in LATE_METHODS:
        # ja: どのように回答を受けたかを選んでください。
        raise ValidationError({"method": _("Choose how the household gave its answers.")})
    return answers_submit(
        circular=circular,
        household=household,
        values=values,
        member=None,
        recorded_by=recorded_by,
        method=method,
        now=now,
    )


def answers_summaries(*, circular: Circular, receipt_ids: list[int]) -> dict[int, str]:
    """A one-line summary of each receipt's answers (「はい / 出席 2人」), for the rows of
    the sign-off screen. Receipts without answers are left out. Two queries."""
    asked = {question.pk: question for question in questions_for(circular=circular)}
    found: dict[int, dict[int, Any]] = {}
    for receipt_id, question_id, value in Answer.objects.filter(
        receipt_id__in=receipt_ids, question__circular=circular
    ).values_list("receipt_id", "question_id", "value"):
        found.setdefault(receipt_id, {})[question_id] = value
    summaries = {}
    for receipt_id, values in found.items():
        parts = [
            answer_display(question, values[question.pk])
            for question in asked.values()
            if question.pk in values
        ]
        summaries[receipt_id] = " / ".join(part for part in parts if part)
    return summaries


def answers_for_receipt(*, receipt: Receipt) -> dict[int, Answer]:
    return {answer.question_id: answer for answer in Answer.objects.filter(receipt=receipt)}


# --- Reading answers ----------------------------------------------------------------------


def answer_display(question: Question, value: Any) -> str:
    """An answer as a person reads it (screen and CSV)."""
    if value is None:
        return ""
    if question.kind in (QuestionKind.SINGLE, QuestionKind.MULTIPLE):
        names = [question.choices[i] for i in value if 0 <= i < len(question.choices)]
        return "、".join(names)
    if question.kind == QuestionKind.TEXT:
        return str(value)
    if value.get("attending"):
        people = int(value.get("people") or 0)
        # ja: 出席 %(people)s人
        return ngettext("Attending, %(people)s person", "Attending, %(people)s people", people) % {
            "people": people
        }
    return _("Not attending")  # ja: 欠席


@dataclass
class QuestionTotals:
    question: Question
    answered: int = 0
    choice_counts: list[tuple[str, int]] = field(default_factory=list)
    attending: int = 0
    absent: int = 0
    people: int = 0
    texts: int = 0


def answers_totals(
    *,
    circular: Circular,
    block_ids: frozenset[int] | None = None,
    asked: list[Question] | None = None,
) -> list[QuestionTotals]:
    """Per question: households answered, counts per choice, attendance households and
    people, and the number of text answers. Two queries whatever the size (one when the
    caller passes the questions it has already read as ``asked``)."""
    questions = questions_for(circular=circular) if asked is None else asked
    answers = Answer.objects.filter(question__circular=circular)
    if block_ids is not None:
        answers = answers.filter(receipt__block_id__in=block_ids)
    totals = {question.pk: QuestionTotals(question=question) for question in questions}
    counts = {question.pk: [0] * len(question.choices) for question in questions}
    for question_id, value in answers.values_list("question_id", "value"):
        item = totals.get(question_id)
        if item is None:
            continue
        item.answered += 1
        kind = item.question.kind
        if kind in (QuestionKind.SINGLE, QuestionKind.MULTIPLE):
            for index in value:
                if 0 <= index < len(counts[question_id]):
                    counts[question_id][index] += 1
        elif kind == QuestionKind.TEXT:
            item.texts += 1
        elif value.get("attending"):
            item.attending += 1
            item.people += int(value.get("people") or 0)
        else:
            item.absent += 1
    for question in questions:
        totals[question.pk].choice_counts = list(
            zip(question.choices, counts[question.pk], strict=True)
        )
    return list(totals.values())


@dataclass
class AnswerRow:
    receipt: Receipt
    block: Block
    cells: list[str]
    answered: bool
    late: bool
    method: str
    # The sheet's questions, in the order of ``cells``: each cell's label on a phone.
    questions: Sequence[Question] = ()

    @property
    def answers(self) -> list[tuple[Question, str]]:
        """Each question with this household's answer to it (blank when none)."""
        return list(zip(self.questions, self.cells, strict=True))

    @property
    def method_label(self) -> str:
        """App, paper slip, phone...: how the answers came (blank when mixed)."""
        return str(dict(ReceiptMethod.choices).get(self.method, ""))


@dataclass
class BlockAnswers:
    """One block's line on the answer list: households answered of households."""

    block: Block
    households: int
    answered: int


@dataclass
class AnswerSheet:
    circular: Circular
    questions: list[Question]
    totals: list[QuestionTotals]
    rows: list[AnswerRow]
    households: int
    answered: int
    all_blocks_visible: bool
    blocks: list[BlockAnswers] = field(default_factory=list)
    filter_block: int | None = None
    # Large associations: rows only for one chosen block (block totals for all).
    rows_folded: bool = False

    @property
    def chosen(self) -> BlockAnswers | None:
        """The block whose rows are shown, when one was chosen and may be seen."""
        return next((item for item in self.blocks if item.block.pk == self.filter_block), None)


def _blocks_answered(receipts: QuerySet[Receipt]) -> list[BlockAnswers]:
    """Each block of these receipts (in its order) with households and answered, one query."""
    answered = Exists(Answer.objects.filter(receipt=OuterRef("pk")))
    rows = receipts_by_block(receipts).annotate(
        households=Count("pk"), answered=Count("pk", filter=Q(answered))
    )
    return [
        BlockAnswers(block=block_of(row), households=row["households"], answered=row["answered"])
        for row in rows
    ]


def _answer_rows(
    receipts: QuerySet[Receipt], answers: QuerySet[Answer], questions: list[Question]
) -> list[AnswerRow]:
    """One row per receipt, in block and circulation order, with its answers. Two queries."""
    by_receipt: dict[int, dict[int, Answer]] = {}
    for answer in answers.order_by():
        by_receipt.setdefault(answer.receipt_id, {})[answer.question_id] = answer
    rows = []
    for receipt in receipts.select_related("household", "block").order_by(
        "block__position", "block_id", "household__circulation_order", "household_id"
    ):
        mine = by_receipt.get(receipt.pk, {})
        cells = [
            answer_display(question, mine[question.pk].value) if question.pk in mine else ""
            for question in questions
        ]
        methods = {answer.method for answer in mine.values()}
        rows.append(
            AnswerRow(
                receipt=receipt,
                block=receipt.block,
                cells=cells,
                answered=bool(mine),
                late=any(answer.late for answer in mine.values()),
                method=methods.pop() if len(methods) == 1 else "",
                questions=questions,
            )
        )
    return rows


def answers_rows(
    *, access: Access, circular: Circular, block_id: int | None = None, fold: bool = False
) -> AnswerSheet:
    """Every household's answers in the blocks the staff member may see (the ledger's
    visibility), with totals over the same blocks. A constant number of queries.

    ``block_id``: the rows of that block only (totals stay those of every visible block).
    ``fold``: for the page, not the CSV: a large association without a chosen block gets
    each block's counts instead of the rows, as the ledger does."""
    visible = circular_staff_block_ids(access=access, circular=circular)
    questions = questions_for(circular=circular)
    receipts = circular_receipts(circular).filter(household__isnull=False)
    answers = Answer.objects.filter(question__circular=circular)
    if visible is not None:
        receipts = receipts.filter(block_id__in=visible)
        answers = answers.filter(receipt__block_id__in=visible)
    blocks = _blocks_answered(receipts)
    block_id = block_chosen(block_id, (item.block.pk for item in blocks))
    households = sum(item.households for item in blocks)
    folded = fold and rows_folded(total=households, block_id=block_id)
    if block_id is not None:
        receipts = receipts.filter(block_id=block_id)
        answers = answers.filter(receipt__block_id=block_id)
    rows = [] if folded else _answer_rows(receipts, answers, questions)
    totals = answers_totals(circular=circular, block_ids=visible, asked=questions)
    return AnswerSheet(
        circular=circular,
        questions=questions,
        totals=totals,
        rows=rows,
        households=households,
        answered=sum(item.answered for item in blocks),
        all_blocks_visible=visible is None,
        blocks=blocks,
        filter_block=block_id,
        rows_folded=folded,
    )


def _cell_safe(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection), as the roster export does."""
    from communities.roster_csv import _cell_safe as safe

    return safe(value)


def answers_csv(*, sheet: AnswerSheet) -> bytes:
    """UTF-8 with a BOM (Excel in Japan opens it as it is), one row per household."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "班",
            "世帯名",
            *[_cell_safe(question.prompt) for question in sheet.questions],
            "方法",
            "期限後",
        ]
    )
    method_labels = dict(ReceiptMethod.choices)
    for row in sheet.rows:
        household = row.receipt.household
        writer.writerow(
            [
                _cell_safe(row.block.name),
                _cell_safe(household.label if household else ""),
                *[_cell_safe(cell) for cell in row.cells],
                str(method_labels.get(row.method, "")) if row.answered else "",
                "期限後" if row.late else "",
            ]
        )
    return ("\ufeff" + out.getvalue()).encode("utf-8")


# --- The resident's form -------------------------------------------------------------------


@dataclass
class AnswerField:
    question: Question
    name: str
    choices: list[tuple[int, str, bool]]
    text: str = ""
    attending: bool | None = None
    people: str = ""
    error: str = ""
    display: str = ""


@dataclass
class AnswerForm:
    fields: list[AnswerField]
    closed: bool
    answered: bool


def _selected(raw: Any) -> set[str]:
    items = raw if isinstance(raw, list) else [raw]
    return {str(item) for item in items if item is not None}


def answer_form(
    *,
    circular: Circular,
    receipt: Receipt | None,
    posted: dict[int, Any] | None = None,
    errors: dict[str, str] | None = None,
    now: datetime | None = None,
) -> AnswerForm | None:
    """The questions with the household's current answers (or what was just posted, when
    it came back with errors). None when the circular asks nothing."""
    questions = questions_for(circular=circular)
    if not questions:
        return None
    current = answers_for_receipt(receipt=receipt) if receipt is not None else {}
    posted, errors = posted or {}, errors or {}
    fields = []
    for question in questions:
        answer = current.get(question.pk)
        value = answer.value if answer is not None else None
        item = AnswerField(
            question=question,
            name=field_name(question),
            choices=[],
            error=errors.get(field_name(question), ""),
            display=answer_display(question, value),
        )
        if question.pk in posted:
            raw = posted[question.pk]
            selected = _selected(raw) if not isinstance(raw, dict) else set()
            if isinstance(raw, str) and question.kind == QuestionKind.TEXT:
                item.text = raw
            if isinstance(raw, dict):
                attending = raw.get("attending")
                item.attending = {"yes": True, "no": False}.get(str(attending))
                item.people = str(raw.get("people") or "")
        else:
            selected = {str(index) for index in value} if isinstance(value, list) else set()
            if isinstance(value, str):
                item.text = value
            if isinstance(value, dict):
                item.attending = bool(value.get("attending"))
                item.people = str(value.get("people") or "") if item.attending else ""
        item.choices = [
            (index, choice, str(index) in selected) for index, choice in enumerate(question.choices)
        ]
        fields.append(item)
    return AnswerForm(
        fields=fields, closed=answers_closed(circular=circular, now=now), answered=bool(current)
    )


def circular_has_questions(*, circular: Circular) -> bool:
    known = getattr(circular, "has_questions", None)  # annotated by circular_get_for_staff
    if known is not None:
        return bool(known)
    return Question.objects.filter(circular=circular).exists()
