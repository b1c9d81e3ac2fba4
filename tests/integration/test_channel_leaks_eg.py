"""One end-to-end case of tests/gateway/test_channel_leaks.py: a researcher's websocket through
Enterprise Gateway to the sentry and the sandboxed guarded kernel, whose guard hostile code goes
around by sending on the kernel's own session (L37). The places the sentry used to let a
kernel-chosen value through (a message type, a MIME type key, a claimed rule, a reply's
`started` time, a JSON list of characters, a value split over two fields) leak nothing to the
client, on any channel or in any part of a message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import GatewayKernel, guarded_kernel_available

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from test_channel_leaks import KIT, ChannelOracle  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

HOSTILE = """\
mrn, name, dob, pc, phone = _row(7)
_iopub(mrn, {'x': 1})
_iopub('display_data', {'data': {'text/plain': 'ok', name: 'y'}, 'metadata': {}})
_iopub('stream', {'name': 'stdout', 'text': 'ok\\n'},
       metadata={'bedside': {'decision': 'released', 'rule': mrn}})
_iopub('comm_msg', {'comm_id': 'c', 'data': {'v': list(name), 'd': dob.split('-')}})
_iopub('comm_open', {'comm_id': mrn[:6], 'target_name': mrn[6:], 'data': {}})
_answer('is_complete_request', 'x_' + mrn.lower(), {'status': 'ok'})
"""


def test_kernel_chosen_names_and_split_values_do_not_cross_the_gateway(eg_gateway, hospital):
    kernel = GatewayKernel.start(eg_gateway, "bedside")
    try:
        if guarded_kernel_available():
            setup = 'import base64, pandas as pd\ndf = hospital.load("patients")'
        else:
            setup = f"import base64, pandas as pd\ndf = pd.read_parquet({str(hospital.data)!r})"
        for cell in (setup, KIT):
            reply, _ = kernel.execute(cell)
            assert reply["content"]["status"] == "ok", reply["content"]
        start = len(kernel.received)
        reply, _ = kernel.execute(HOSTILE)
        assert reply["content"]["status"] == "ok", reply["content"]
        kernel.request("is_complete_request", {"code": "x"})
        received = [(m.get("channel", ""), m) for m in kernel.received[start:]]
        assert len(received) > 5
        oracle = ChannelOracle(hospital.frame)
        assert not oracle.leaks(received), [
            m["msg_type"] for ch, m in received if oracle.leaks([(ch, m)])
        ]
    finally:
        kernel.shutdown()
