"""OneStop routing.

Sends each case to the responsible office's queue by jurisdiction, capacity, priority and SLA; caseworkers claim,
review, request information and decide.

**Cases** come from `eligibility.determined`: one per application and program that needs a person (eligible but not
automatic, needs review, or needs information only staff can obtain). An automatic grant makes a case that is
already decided, so the resident's status shows it. Later evaluation rounds update the cases; a withdrawal closes
them.

**Routing** (stored on every case with the candidates considered): the office serving the resident's district for
the program's department (Seoul City Hall when none does); when it is full (weighted load at or above its ceiling)
and the program allows overflow, the least-loaded neighbour with room; a resident who prefers another language than
Korean goes to an office that speaks it when one can take the case, and is otherwise flagged `interpreter_needed`.
A program whose department no office handles at all is held at the city-wide desk (rule `unserved`, counted by the
`onestop_routing_unserved_cases` metric) until an office takes the department and the case is transferred there.

**Priority** 1 routine, 2 elevated, 3 high, 4 urgent: one level for any vulnerability flag, another for two flags
or a severe one (a child heading the household, an elderly person living alone), another when the due date is two
working days away or less; escalated cases are urgent. Queues list the most urgent first, then by due date.

**SLA**: the due date is the program's SLA in working days (weekends, Korean public holidays and configured closure
days excluded) after the application date. While a case waits on the resident its clock is paused, and the due date
moves by the working days waited. The due date is the last day allowed, the whole of it; a case still undecided
when the next working day begins (the Monday after a Friday due date) is breached: `case.sla_breached` is published
once and the case escalates to the office's supervisors.

**Who sees what**: caseworkers and supervisors see the cases of their offices (another office's case is a 404) and
supervisors their capacity; admins everything; residents, partners and services never see queues or cases (403).
Reads of cases are written to the audit log with their `purpose`. Open data is aggregated, with small counts hidden.
"""
