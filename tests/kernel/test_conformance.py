"""The guarded kernel still speaks the Jupyter protocol: `jupyter_kernel_test` on unprotected data.

The policy names the synthetic hospital, but these cells never load a protected table, so the
guard must let every message through unchanged (and mark none of them).
"""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import jupyter_kernel_test

from tests.kernel._client import kernel_spec_dir
from tests.kernel._data import write_hospital


class GuardedKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = "bedside-conformance"
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "print?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    _tmp: tempfile.TemporaryDirectory[str]
    _saved_path: str | None

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        root = Path(cls._tmp.name)
        policy, _ = write_hospital(root)
        kernel_spec_dir(root / "share", cls.kernel_name, policy)
        cls._saved_path = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = str(root / "share")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        if cls._saved_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = cls._saved_path
        cls._tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
