"""A "local pod" process proxy for Enterprise Gateway 3.3: Kubernetes replaced by a local process.

Loaded by EG (from `.venv-eg`, through PYTHONPATH) in tests/integration/test_k8s_local_pod.py.
It behaves as EG's `KubernetesProcessProxy` (a `ContainerProcessProxy`) does once the pod exists,
with the pod replaced by the kernelspec's command run as a local process:

- launch: run the command (EG's `{kernel_id}`, `{response_address}`, `{public_key}`,
  `{port_range}` substituted into it by EG), then wait for the connection info on EG's response
  address with EG's own `receive_connection_info` (its ResponseManager decrypts it);
- `poll` is "is the pod running"; `send_signal(0)` polls, `SIGKILL` kills, any other signal goes
  to the launcher's comm port (RemoteProcessProxy.send_signal), as in ContainerProcessProxy;
- `kill` and `shutdown_listener` end the pod as deleting it would: SIGTERM, then SIGKILL after a
  grace period.

What it does not stand in for: the pod's scheduling, image, volumes, security context and
NetworkPolicy, none of which exist here. This file runs in EG's environment: no bedside imports.
"""

import signal
import subprocess

from enterprise_gateway.services.processproxies.processproxy import RemoteProcessProxy

GRACE_SECONDS = 30


class LocalPodProcessProxy(RemoteProcessProxy):
    """EG's remote-kernel life cycle, with a local process where the pod would be."""

    def __init__(self, kernel_manager, proxy_config):
        super().__init__(kernel_manager, proxy_config)
        self.pod = None

    async def launch_process(self, kernel_cmd, **kwargs):
        await super().launch_process(kernel_cmd, **kwargs)
        self.pod = self.launch_kernel(kernel_cmd, **kwargs)
        self.local_proc = None  # like a pod: reached through the comm port, not signalled
        self.pid = self.pgid = 0
        self.assigned_host = "localhost"
        self.assigned_ip = "127.0.0.1"  # the pod IP EG would read from the pod's status
        self.log.info(f"LocalPodProcessProxy: 'pod' pid {self.pod.pid}, KernelID {self.kernel_id}")
        await self.confirm_remote_startup()
        return self

    async def confirm_remote_startup(self):
        self.start_time = RemoteProcessProxy.get_current_time()
        ready = False
        while not ready:
            await self.handle_timeout()
            code = self.pod.poll()
            if code is not None:
                self.log_and_raise(
                    http_status_code=500,
                    reason=f"the kernel pod exited with status {code} before it reported back",
                )
            ready = await self.receive_connection_info()
        self.pid = self.pgid = 0  # as ContainerProcessProxy: no process signals

    def poll(self):
        if self.pod is None or self.pod.poll() is not None:
            return False
        return None

    def send_signal(self, signum):
        if signum == 0:
            return self.poll()
        if signum == signal.SIGKILL:
            return self.kill()
        return super().send_signal(signum)

    def _delete_pod(self):
        if self.pod is None or self.pod.poll() is not None:
            return
        self.pod.terminate()  # the kubelet's SIGTERM
        try:
            self.pod.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.pod.kill()
            self.pod.wait()

    def kill(self):
        self._delete_pod()
        return None

    def terminate(self):
        self._delete_pod()
        return None

    def shutdown_listener(self):
        super().shutdown_listener()
        self._delete_pod()

    def wait(self):
        if self.pod is not None:
            return self.pod.wait()
        return None
