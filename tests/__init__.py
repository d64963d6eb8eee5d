"""The test suite. Its scratch files go to memory when there is room (tests/support/scratch.py): chosen here, as the
package is first imported, before any module works out where its temporary files go."""

from tests.support.scratch import keep_scratch_in_memory

keep_scratch_in_memory()
