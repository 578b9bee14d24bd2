"""The edge's first boot, once llmfleet is installed from the bundle (the user data's own
script has unpacked it):

    python -m llmfleet.edge.boot redis-volume REGION VOLUME_ID MOUNT_POINT [WAIT_S]
    python -m llmfleet.edge.boot publish REGION ALLOCATION_ID HEALTH_URL WAIT_S
    python -m llmfleet.edge.boot tls-files REGION CHAIN_PARAMETER KEY_PARAMETER CHAIN KEY

redis-volume: attach the stack's Redis volume to this instance (waiting for the edge before to
let go of it), make a file system on it the first time, and mount it where Redis keeps its
data, at every boot (fstab): the API keys outlive any edge instance.

publish: once nginx's /health answers here, take this stack's Elastic IP; if it never answers
or the address cannot be taken, mark this instance unhealthy, so its group replaces it instead
of keeping an edge that serves nothing.

tls-files (edge.tls.mode certificate): the certificate chain and its key from their SSM
SecureString parameters into root-only files, at every boot, so a rotated certificate is in
use after the next replacement or reboot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

IMDS = "http://169.254.169.254/latest"
# Where a replaced edge's volume may still be held while the instance before terminates.
VOLUME_WAIT_S = 600
POLL_S = 5


def metadata(name: str) -> str:
    """One instance metadata value, with IMDSv2's session token (the only kind allowed)."""
    put = urllib.request.Request(f"{IMDS}/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(put, timeout=5).read().decode()
    return urllib.request.urlopen(urllib.request.Request(
        f"{IMDS}/meta-data/{name}", headers={"X-aws-ec2-metadata-token": token}),
        timeout=5).read().decode()


# -- the Redis volume ------------------------------------------------------------------------

def redis_volume(region: str, volume_id: str, mount_point: str,
                 wait_s: str = str(VOLUME_WAIT_S)) -> None:
    import boto3  # only on the edge; the module's other parts need no AWS SDK

    deadline = time.monotonic() + float(wait_s)
    attach(boto3.client("ec2", region_name=region), volume_id, metadata("instance-id"),
           deadline)
    prepare(wait_for_device(volume_id, deadline), mount_point)


def attach(ec2: Any, volume_id: str, instance_id: str, deadline: float) -> None:
    """The volume on this instance: at once when free, after the edge before lets go of it
    (while it terminates), or not at all by `deadline` (RuntimeError)."""
    while True:
        [volume] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        holders = [a["InstanceId"] for a in volume.get("Attachments", [])]
        if instance_id in holders:
            return  # a reboot: it is ours already
        if volume["State"] == "available":
            break
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{volume_id} is still held by {holders}")
        time.sleep(POLL_S)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")


def wait_for_device(volume_id: str, deadline: float) -> str:
    """The attached volume's block device. On Nitro instances it is an NVMe device whose id
    link names the volume; older types show the name it was attached as."""
    names = [f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}",
             "/dev/xvdf", "/dev/sdf"]
    while True:
        for name in names:
            if os.path.exists(name):
                return os.path.realpath(name)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{volume_id} is attached but no device appeared")
        time.sleep(1)


def prepare(device: str, mount_point: str, fstab: str = "/etc/fstab",
            run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """A file system on the device the first time only (the next edges find the keys on it),
    mounted at `mount_point` now and at every boot, owned by Redis."""
    kind = run(["blkid", "-o", "value", "-s", "TYPE", device],
               capture_output=True, text=True).stdout.strip()
    if not kind:  # the first edge of this stack: a new, empty volume
        run(["mkfs.ext4", "-q", "-L", "llmfleet-redis", device], check=True)
    os.makedirs(mount_point, exist_ok=True)
    uuid = run(["blkid", "-o", "value", "-s", "UUID", device],
               capture_output=True, text=True, check=True).stdout.strip()
    entry = f"UUID={uuid} {mount_point} ext4 defaults,nofail 0 2\n"
    with open(fstab, "a+") as table:
        table.seek(0)
        if entry not in table.read():  # Redis's unit requires the mount at every boot
            table.write(entry)
    run(["mount", mount_point], check=True)
    run(["chown", "redis:redis", mount_point], check=True)
    run(["chmod", "0750", mount_point], check=True)


# -- the Elastic IP --------------------------------------------------------------------------

def answers(url: str, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass  # not yet: the sync agent writes nginx's config on its first pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)


def publish(region: str, allocation_id: str, health_url: str, wait_s: str) -> None:
    import boto3

    instance_id = metadata("instance-id")
    try:
        if not answers(health_url, float(wait_s)):
            raise RuntimeError(f"{health_url} did not answer within {wait_s} s")
        # AllowReassociation: a replacement edge takes the address from the one before.
        boto3.client("ec2", region_name=region).associate_address(
            AllocationId=allocation_id, InstanceId=instance_id, AllowReassociation=True)
    except Exception:
        boto3.client("autoscaling", region_name=region).set_instance_health(
            InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)
        raise


# -- the certificate -------------------------------------------------------------------------

def tls_files(region: str, chain_parameter: str, key_parameter: str, chain: str, key: str
              ) -> None:
    import boto3

    write_tls_files(boto3.client("ssm", region_name=region),
                    {chain_parameter: chain, key_parameter: key})


def write_tls_files(ssm: Any, files: dict[str, str]) -> None:
    """Each parameter's decrypted value into its file, 0600 from the start, swapped in whole
    (nginx never reads half a key)."""
    for parameter, path in files.items():
        value = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
        if "-----BEGIN " not in value:
            raise RuntimeError(f"{parameter} holds no PEM block")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        candidate = f"{path}.new"
        if os.path.exists(candidate):
            os.unlink(candidate)
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(value if value.endswith("\n") else value + "\n")
        os.replace(candidate, path)


STEPS: dict[str, Callable[..., None]] = {"redis-volume": redis_volume, "publish": publish,
                                         "tls-files": tls_files}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in STEPS:
        print(f"usage: python -m llmfleet.edge.boot {'|'.join(STEPS)} ARGS...", file=sys.stderr)
        return 2
    STEPS[args[0]](*args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
