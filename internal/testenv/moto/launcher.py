"""Start moto's server with small extensions that reproduce documented AWS
behaviour moto 5.x lacks, so that crabbox's AWS driver is tested against the
semantics it meets on real AWS.

Usage: python3 launcher.py --host 127.0.0.1 --port N [--no-capacity-types a,b]
       [--image-pending-polls N] [--snapshot-inuse-after-deregister N]
       [--ssm-image-validation-ms MS] [--ssm-validate-image-exists]
       [--sg-propagation-ms MS]

Every extension below is small and names the AWS behaviour it reproduces. They
patch moto's Python objects before moto.server.main runs; nothing else in moto
changes. State lives on moto's backend objects, so POST /moto-api/reset clears
it with everything else.
"""

import argparse
import datetime
import os
import re
import sys
import threading
import time
import types

# AWS rejects RunInstances with an AMI id that does not exist
# (InvalidAMIID.NotFound) and with a key pair name that does not exist
# (InvalidKeyPair.NotFound); moto only checks when asked to.
os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
os.environ.setdefault("MOTO_ENABLE_KEYPAIR_VALIDATION", "true")

import moto.server  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.core.utils import utcnow  # noqa: E402
from moto.ec2 import exceptions as ec2exc  # noqa: E402
from moto.ec2.models import amis as amimodels  # noqa: E402
from moto.ec2.models import elastic_block_store as ebsmodels  # noqa: E402
from moto.ec2.responses import EC2Response  # noqa: E402

OPTS = argparse.Namespace(
    no_capacity_types=set(), image_pending_polls=2, snapshot_inuse_after_deregister=1,
    ssm_image_validation=0.0, ssm_validate_image_exists=False, sg_propagation=0.0,
)

# Tags a test puts on an instance to steer the image CreateImage makes from it.
# (Test control only; real AWS decides this itself.)
TAG_IMAGE_STATE = "moto-emu:image-state"  # "failed" makes the image fail
TAG_IMAGE_REASON = "moto-emu:image-state-reason"  # StateReason.Message
TAG_IMAGE_POLLS = "moto-emu:image-pending-polls"  # DescribeImages polls while pending
TAG_IMAGE_SHARE = "moto-emu:image-share-snapshot-of"  # the new image uses this AMI's snapshot


def _err(code, message):
    return ec2exc.EC2ClientError(code, message)


def _tags_for(tag_specifications, resource_type):
    tags = {}
    for spec in tag_specifications or []:
        if spec.get("ResourceType") == resource_type:
            for t in spec.get("Tags", []):
                tags[t["Key"]] = t.get("Value", "")
    return tags


# --- Canonical Ubuntu 24.04 images ------------------------------------------
# AWS: Canonical (owner 099720109477) publishes "ubuntu/images/hvm-ssd-gp3/
# ubuntu-noble-24.04-<arch>-server-<date>" AMIs in every region; clients pick
# the newest by CreationDate. moto's image catalogue has none, so seed two
# releases per architecture (the newer one must win).
CANONICAL = "099720109477"
_orig_load_amis = amimodels.AmiBackend._load_amis


def _load_amis(self):
    _orig_load_amis(self)
    n = 0
    for arch, awsarch in (("amd64", "x86_64"), ("arm64", "arm64")):
        for date in ("20250115", "20250610"):
            n += 1
            ami_id = "ami-0ca0ca%02d%s" % (n, date)
            self.amis[ami_id] = amimodels.Ami(
                self,
                ami_id,
                name="ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-%s-server-%s" % (arch, date),
                description="Canonical, Ubuntu, 24.04, %s noble image" % arch,
                owner_id=CANONICAL,
                public=True,
                architecture=awsarch,
                virtualization_type="hvm",
                root_device_type="ebs",
                root_device_name="/dev/sda1",
                creation_date=datetime.datetime.strptime(date, "%Y%m%d").replace(
                    tzinfo=datetime.timezone.utc
                ),
            )


amimodels.AmiBackend._load_amis = _load_amis


# --- DescribeInstances filter client-token ------------------------------------
# AWS: DescribeInstances supports the "client-token" filter (the token given to
# RunInstances); moto raises NotImplementedError for it.
from moto.ec2 import utils as ec2utils  # noqa: E402

ec2utils.filter_dict_attribute_mapping["client-token"] = "client_token"


# --- DescribeImages filters on block device mappings -------------------------
# AWS (EC2 API Reference, DescribeImages, Filters): "block-device-mapping.
# snapshot-id - The ID of the snapshot used for the Amazon EBS volume", and
# "block-device-mapping.device-name". moto raises FilterNotImplementedError.
_orig_ami_filter = amimodels.Ami.get_filter_value


def _ami_filter_value(self, filter_name, method_name=None):
    if filter_name == "block-device-mapping.snapshot-id":
        return [bd["Ebs"]["SnapshotId"] for bd in self.block_device_mappings if bd.get("Ebs")]
    if filter_name == "block-device-mapping.device-name":
        return [bd["DeviceName"] for bd in self.block_device_mappings]
    return _orig_ami_filter(self, filter_name, method_name)


amimodels.Ami.get_filter_value = _ami_filter_value

# AWS: a filter with several values matches a resource when any of its
# values matches any of the resource's (the values are ORed). moto's generic
# matching of list values asks for a subset or superset instead, which misses
# an image whose snapshots only overlap the values; the list-valued filters
# added here use AWS's rule.
_ANY_OF_FILTERS = {"block-device-mapping.snapshot-id", "block-device-mapping.device-name"}
_orig_is_filter_matching = ec2utils.is_filter_matching


def _is_filter_matching(obj, _filter, filter_value):
    if _filter in _ANY_OF_FILTERS and isinstance(obj, amimodels.Ami):
        if filter_value is None:
            return False
        values = filter_value if isinstance(filter_value, list) else [filter_value]
        import fnmatch

        return any(fnmatch.fnmatch(v, pat) for v in obj.get_filter_value(_filter) for pat in values)
    return _orig_is_filter_matching(obj, _filter, filter_value)


ec2utils.is_filter_matching = _is_filter_matching


# --- RunInstances: capacity errors and ClientToken idempotency ---------------
_orig_run_instances = EC2Response.run_instances

# Request fields a retry may change without breaking idempotency: the
# protocol's own (Action, Version), the token itself and DryRun. AWS
# ("Ensuring idempotency in Amazon EC2 API requests",
# https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html):
# a retry with the same client token but one or more parameters changed,
# other than the Region or Availability Zone, fails with
# IdempotentParameterMismatch. The Placement zone is therefore ignored too.
_IDEMPOTENCY_IGNORED = ("Action", "Version", "ClientToken", "DryRun", "Placement.AvailabilityZone")


def _request_params(self):
    """The request's parameters for an idempotency comparison: every query
    field except _IDEMPOTENCY_IGNORED, by name. A list's members are
    numbered on the wire (TagSpecification.1.Tag.2.Key), so the same list in
    another order compares different (how EC2 compares it is not
    documented; the driver sends tags sorted)."""
    return {k: tuple(v) for k, v in self.querystring.items() if k not in _IDEMPOTENCY_IGNORED}


def _server_error(self, code, message, status=500):
    """An EC2 error answered with a 5xx status (moto answers every EC2 error
    with 400)."""
    _, headers, body = self.serialized(ActionResult(_err(code, message)))
    headers["status"] = status
    return body, headers


def _unpropagated_groups(backend, group_ids):
    """The ids among group_ids of security groups created too recently to be
    visible yet (see the security group section below)."""
    now = time.monotonic()
    res = []
    for groups in backend.groups.values():
        for gid in group_ids:
            if gid in groups and getattr(groups[gid], "_emu_visible_at", 0) > now:
                res.append(gid)
    return res


def run_instances(self):
    itype = self._get_param("InstanceType", "m1.small")
    if itype in OPTS.no_capacity_types:
        # AWS: InsufficientInstanceCapacity when the type has no capacity in
        # the zone; nothing is created. It is a server error (HTTP 500,
        # "Server error codes" in the EC2 API error codes reference,
        # https://docs.aws.amazon.com/ec2/latest/devguide/errors-overview.html),
        # which the AWS SDKs' standard retryers retry.
        return _server_error(
            self,
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient %s capacity in the Availability Zone you requested." % itype,
        )
    hidden = _unpropagated_groups(self.ec2_backend, self._get_param("SecurityGroupIds", []))
    if hidden:
        # AWS (EC2 API eventual consistency): a security group just created
        # may not be usable yet: InvalidGroup.NotFound.
        raise _err("InvalidGroup.NotFound", "The security group '%s' does not exist" % hidden[0])
    token = self._get_param("ClientToken")
    backend = self.ec2_backend
    tokens = backend.__dict__.setdefault("_emu_client_tokens", {})
    if token and token in tokens:
        # AWS ("Ensuring idempotency", RunInstances idempotency): a
        # RunInstances retried with the same ClientToken and the same
        # parameters returns the original reservation instead of launching
        # again; with any parameter changed it fails with
        # IdempotentParameterMismatch; when the instance it launched has
        # been terminated, it fails with IdempotentInstanceTerminated (EC2
        # API error codes reference; the idempotency guide: the token stays
        # valid for at least 24 hours after the termination).
        reservation, params = tokens[token]
        if params != _request_params(self):
            raise _err(
                "IdempotentParameterMismatch",
                "The client token %s was already used with different parameters." % token,
            )
        instances = getattr(reservation, "instances", None) or []
        if instances and all(i.state == "terminated" for i in instances):
            raise _err(
                "IdempotentInstanceTerminated",
                "The client token %s was used by an instance that has been terminated." % token,
            )
        self.error_on_dryrun()
        return ActionResult(reservation)
    result = _orig_run_instances(self)
    if token:
        reservation = result.result if hasattr(result, "result") else None
        if reservation is None:
            reservation = getattr(result, "_result", None)
        if reservation is not None:
            tokens[token] = (reservation, _request_params(self))
    return result


EC2Response.run_instances = run_instances


# --- CreateImage / CopyImage: snapshot tags, pending and failed states -------
def _start_pending(backend, ami, polls, fail_reason):
    # AWS: a new image is "pending" until its snapshots complete, then
    # "available", or "failed" with a StateReason.
    ami.state = "pending"
    ami._emu_polls = polls
    ami._emu_fail = fail_reason
    ami.state_reason = None
    ami.deprecation_time = None
    ami.deregistration_protection = "disabled"


# Snapshot descriptions. AWS does not document the text EC2 writes on the
# snapshots of an image; these are the formats seen in public logs (moto's own
# ends " for ami-...", which a client must not rely on):
#   CreateImage: "Created by CreateImage(i-...) for ami-... from vol-..."
#   CopyImage:   "Copied for DestinationAmi ami-... from SourceAmi ami-... for
#                 SourceSnapshot snap-.... Task created on <epoch ms>."
def _describe_snapshot_created(ami, instance_id):
    snap = ami.ebs_snapshot
    vol = getattr(getattr(snap, "volume", None), "id", None) or "vol-0000000000000000"
    snap.description = "Created by CreateImage(%s) for %s from %s" % (instance_id, ami.id, vol)


def _describe_snapshot_copied(ami, src):
    src_snap = getattr(getattr(src, "ebs_snapshot", None), "id", "snap-0000000000000000")
    ms = int(utcnow().timestamp() * 1000)
    ami.ebs_snapshot.description = "Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s. Task created on %s." % (
        ami.id, src.id, src_snap, "{:,}".format(ms))


def create_image(self):
    name = self._get_param("Name")
    description = self._get_param("Description", "")
    instance_id = self._get_param("InstanceId")
    specs = self._get_param("TagSpecifications", [])
    self.error_on_dryrun()
    for spec in specs:
        if spec.get("ResourceType") not in ("image", "snapshot"):
            raise ec2exc.InvalidTaggableResourceType(spec.get("ResourceType"))
    backend = self.ec2_backend
    instance = backend.get_instance(instance_id)
    for ami in backend.amis.values():
        # AWS: AMI names are unique per account and region.
        if ami.name == name and ami.owner_id == backend.account_id:
            raise _err(
                "InvalidAMIName.Duplicate",
                "AMI name %s is already in use by AMI %s" % (name, ami.id),
            )
    # image tags only; snapshot tags are applied below (AWS: TagSpecifications
    # with ResourceType "snapshot" tag every snapshot the image creates).
    image_specs = [s for s in specs if s.get("ResourceType") == "image"]
    ami = backend.create_image(instance_id, name, description, tag_specifications=image_specs)
    for k, v in _tags_for(specs, "snapshot").items():
        ami.ebs_snapshot.add_tag(k, v)
    _describe_snapshot_created(ami, instance_id)
    itags = {t["key"]: t["value"] for t in backend.describe_tags(filters={"resource-id": [instance.id]})}
    share = backend.amis.get(itags.get(TAG_IMAGE_SHARE, ""))
    if share is not None:
        # AWS: images registered from the same snapshot share it (test
        # control: moto gives every image its own snapshot).
        own = ami.ebs_snapshot
        ami.ebs_snapshot = share.ebs_snapshot
        backend.snapshots.pop(own.id, None)
    polls = int(itags.get(TAG_IMAGE_POLLS, OPTS.image_pending_polls))
    fail = None
    if itags.get(TAG_IMAGE_STATE) == "failed":
        fail = itags.get(TAG_IMAGE_REASON, "image creation failed")
    _start_pending(backend, ami, polls, fail)
    return ActionResult({"ImageId": ami.id})


EC2Response.create_image = create_image


def copy_image(self):
    source_image_id = self._get_param("SourceImageId")
    source_region = self._get_param("SourceRegion")
    name = self._get_param("Name")
    description = self._get_param("Description")
    copy_tags = str(self._get_param("CopyImageTags", "false")).lower() == "true"
    specs = self._get_param("TagSpecifications", [])
    self.error_on_dryrun()
    ami = self.ec2_backend.copy_image(source_image_id, source_region, name, description)
    from moto.ec2.models import ec2_backends

    src = ec2_backends[self.ec2_backend.account_id][source_region].amis[source_image_id]
    _describe_snapshot_copied(ami, src)
    if copy_tags:
        # AWS: CopyImageTags=true copies the source AMI's user-defined tags.
        for t in src.get_tags():
            ami.add_tag(t["key"], t["value"])
    for k, v in _tags_for(specs, "image").items():
        ami.add_tag(k, v)
    for k, v in _tags_for(specs, "snapshot").items():
        ami.ebs_snapshot.add_tag(k, v)
    _start_pending(self.ec2_backend, ami, OPTS.image_pending_polls, None)
    return ActionResult({"ImageId": ami.id})


EC2Response.copy_image = copy_image

_orig_describe_images = EC2Response.describe_images


def describe_images(self):
    # Each DescribeImages that returns a pending image counts as one poll;
    # after the configured number of polls it becomes available (or failed).
    result = _orig_describe_images(self)
    for ami in list(self.ec2_backend.amis.values()):
        if getattr(ami, "state", None) == "pending" and hasattr(ami, "_emu_polls"):
            if ami._emu_polls > 0:
                ami._emu_polls -= 1
                continue
            if ami._emu_fail:
                ami.state = "failed"
                ami.state_reason = {"Code": "Server.InternalError", "Message": ami._emu_fail}
            else:
                ami.state = "available"
    return result


EC2Response.describe_images = describe_images


# --- Deprecation and deregistration protection -------------------------------
def _ami(self, ami_id):
    amis = self.ec2_backend.describe_images(ami_ids=[ami_id])
    if not amis:
        raise ec2exc.InvalidAMIIdError(ami_id)
    return amis[0]


def enable_image_deprecation(self):
    # AWS: sets DeprecationTime (rounded to the minute); a time in the past is
    # rejected.
    ami = _ami(self, self._get_param("ImageId"))
    at = self._get_param("DeprecateAt")
    if isinstance(at, str):
        at = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    if at < now - datetime.timedelta(seconds=60):
        raise _err("InvalidParameterValue", "The deprecation time cannot be in the past.")
    at = (at + datetime.timedelta(seconds=30)).replace(second=0, microsecond=0)
    self.error_on_dryrun()
    ami.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


def disable_image_deprecation(self):
    ami = _ami(self, self._get_param("ImageId"))
    self.error_on_dryrun()
    ami.deprecation_time = None
    return ActionResult({"Return": True})


# Deregistration protection and its cooldown follow the EC2 API Reference,
# EnableImageDeregistrationProtection ("WithCooldown: If true, enforces
# deregistration protection for 24 hours after deregistration protection is
# disabled") and DisableImageDeregistrationProtection ("If you chose to include
# a 24-hour cooldown period when you enabled deregistration protection for the
# AMI, then, when you disable deregistration protection, you won't immediately
# be able to deregister the AMI"). Undocumented, so chosen here: during the
# cooldown DescribeImages shows "disabled" (the value that tells a client the
# least), and DeregisterImage fails with OperationNotPermitted (the code for a
# protected image is not documented either).
PROTECTION_COOLDOWN = datetime.timedelta(hours=24)
# Test control: an image carrying this tag ("true") has passed its cooldown
# (a test cannot wait 24 hours).
TAG_COOLDOWN_OVER = "moto-emu:protection-cooldown-over"


def enable_image_deregistration_protection(self):
    # AWS: a protected image cannot be deregistered until protection is
    # disabled (and, with cooldown, for 24 hours after that).
    ami = _ami(self, self._get_param("ImageId"))
    cooldown = str(self._get_param("WithCooldown", "false")).lower() == "true"
    self.error_on_dryrun()
    ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled-without-cooldown"
    ami._emu_cooldown_until = None
    return ActionResult({"Return": ami.deregistration_protection})


def disable_image_deregistration_protection(self):
    ami = _ami(self, self._get_param("ImageId"))
    self.error_on_dryrun()
    if getattr(ami, "deregistration_protection", "disabled") == "enabled-with-cooldown":
        ami._emu_cooldown_until = datetime.datetime.now(datetime.timezone.utc) + PROTECTION_COOLDOWN
    ami.deregistration_protection = "disabled"
    return ActionResult({"Return": "disabled"})


def _cooldown_until(ami):
    until = getattr(ami, "_emu_cooldown_until", None)
    if until is None:
        return None
    tags = {t["key"]: t["value"] for t in ami.get_tags()}
    if tags.get(TAG_COOLDOWN_OVER) == "true" or datetime.datetime.now(datetime.timezone.utc) >= until:
        ami._emu_cooldown_until = None
        return None
    return until


_orig_deregister = EC2Response.deregister_image


def deregister_image(self):
    ami_id = self._get_param("ImageId")
    ami = self.ec2_backend.amis.get(ami_id)
    if ami is not None and str(getattr(ami, "deregistration_protection", "disabled")).startswith("enabled"):
        raise _err(
            "OperationNotPermitted",
            "Image %s has deregistration protection enabled; disable it first." % ami_id,
        )
    until = _cooldown_until(ami) if ami is not None else None
    if until is not None:
        raise _err(
            "OperationNotPermitted",
            "Image %s cannot be deregistered until %s: deregistration protection was disabled with a cooldown period."
            % (ami_id, until.strftime("%Y-%m-%dT%H:%M:%SZ")),
        )
    snap = getattr(ami, "ebs_snapshot", None) if ami is not None else None
    result = _orig_deregister(self)
    if snap is not None:
        # AWS: right after DeregisterImage, DeleteSnapshot of the image's
        # snapshot can still fail with InvalidSnapshot.InUse for a while.
        snap._emu_inuse = OPTS.snapshot_inuse_after_deregister
        snap._emu_inuse_ami = ami_id
    return result


EC2Response.deregister_image = deregister_image
EC2Response.enable_image_deprecation = enable_image_deprecation
EC2Response.disable_image_deprecation = disable_image_deprecation
EC2Response.enable_image_deregistration_protection = enable_image_deregistration_protection
EC2Response.disable_image_deregistration_protection = disable_image_deregistration_protection

_orig_delete_snapshot = ebsmodels.EBSBackend.delete_snapshot


def delete_snapshot(self, snapshot_id):
    snap = self.snapshots.get(snapshot_id)
    if snap is not None and getattr(snap, "_emu_inuse", 0) > 0:
        snap._emu_inuse -= 1
        raise ec2exc.InvalidSnapshotInUse(snapshot_id, snap._emu_inuse_ami)
    # AWS: a snapshot any registered image uses cannot be deleted (moto only
    # checks the image that created it).
    for ami in self.amis.values():
        if getattr(ami, "ebs_snapshot", None) is snap and snap is not None:
            raise ec2exc.InvalidSnapshotInUse(snapshot_id, ami.id)
    return _orig_delete_snapshot(self, snapshot_id)


ebsmodels.EBSBackend.delete_snapshot = delete_snapshot


# --- DescribeImageReferences -------------------------------------------------
# Coverage follows the EC2 User Guide, "Identify your resources referencing
# specified AMIs" (How AMI reference checks work): IncludeAllResourceTypes
# applies the default ResourceTypeOptions, which ResourceTypes with options
# override: ec2:Instance "state-name" defaults to every state (pending,
# running, shutting-down, terminated, stopping, stopped: terminated instances
# EC2 still describes count); ec2:LaunchTemplate "version-depth" defaults to
# the 10 most recent versions. SSM parameters count by value. (Image Builder
# recipes are not emulated.)
INSTANCE_STATES = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]
LAUNCH_TEMPLATE_VERSION_DEPTH = 10


def _reference_options():
    return {"ec2:Instance": {"state-name": list(INSTANCE_STATES)},
            "ec2:LaunchTemplate": {"version-depth": [str(LAUNCH_TEMPLATE_VERSION_DEPTH)]},
            "ssm:Parameter": {}}


def describe_image_references(self):
    image_ids = self._get_param("ImageIds", [])
    include_all = str(self._get_param("IncludeAllResourceTypes", "false")).lower() == "true"
    requested = self._get_param("ResourceTypes", [])
    self.error_on_dryrun()
    backend = self.ec2_backend
    acct, region = backend.account_id, backend.region_name
    for i in image_ids:
        _ami(self, i)
    opts = _reference_options() if include_all else {}
    for rt in requested:
        t = rt.get("ResourceType")
        o = opts.setdefault(t, _reference_options().get(t, {}))
        for opt in rt.get("ResourceTypeOptions", []) or []:
            o[opt.get("OptionName")] = [str(v) for v in opt.get("OptionValues", [])]
    refs = []

    if "ec2:Instance" in opts:
        states = set(opts["ec2:Instance"].get("state-name") or INSTANCE_STATES)
        for inst in backend.all_instances():
            if inst.image_id in image_ids and inst.state in states:
                refs.append({
                    "ImageId": inst.image_id,
                    "ResourceType": "ec2:Instance",
                    "Arn": "arn:aws:ec2:%s:%s:instance/%s" % (region, acct, inst.id),
                })
    if "ec2:LaunchTemplate" in opts:
        depth = int((opts["ec2:LaunchTemplate"].get("version-depth") or [LAUNCH_TEMPLATE_VERSION_DEPTH])[0])
        for lt in backend.launch_templates.values():
            recent = lt.versions[-depth:]
            for v in recent:
                if v.image_id in image_ids:
                    refs.append({
                        "ImageId": v.image_id,
                        "ResourceType": "ec2:LaunchTemplate",
                        "Arn": "arn:aws:ec2:%s:%s:launch-template/%s" % (region, acct, lt.id),
                    })
                    break
    if "ssm:Parameter" in opts:
        try:
            from moto.ssm.models import ssm_backends

            ssm = ssm_backends[acct][region]
            for name, versions in ssm._parameters.items():
                if versions and versions[-1].value in image_ids:
                    refs.append({
                        "ImageId": versions[-1].value,
                        "ResourceType": "ssm:Parameter",
                        "Arn": "arn:aws:ssm:%s:%s:parameter%s" % (region, acct, name if name.startswith("/") else "/" + name),
                    })
        except Exception:  # SSM not used in this account/region
            pass
    return ActionResult({"ImageReferences": refs})


EC2Response.describe_image_references = describe_image_references


# --- Instances that EC2 stops describing ---------------------------------------
# AWS: a terminated instance stays visible in DescribeInstances for about an
# hour, then EC2 no longer describes it at all; moto keeps terminated
# instances for ever. An instance carrying this tag (test control) skips the
# hour: TerminateInstances removes it from moto's state at once (its response
# still reports the state change).
TAG_VANISH = "moto-emu:vanish-on-terminate"  # "true"
from moto.ec2.models import instances as instmodels  # noqa: E402

_orig_terminate_instances = instmodels.InstanceBackend.terminate_instances


def terminate_instances(self, instance_ids):
    result = _orig_terminate_instances(self, instance_ids)
    gone = {i.id for i, _ in result if {t["key"]: t["value"] for t in i.get_tags()}.get(TAG_VANISH) == "true"}
    if gone:
        for rid, r in list(self.reservations.items()):
            r.instances = [i for i in r.instances if i.id not in gone]
            if not r.instances:
                del self.reservations[rid]
        for iid in gone:
            self.tags.pop(iid, None)
    return result


instmodels.InstanceBackend.terminate_instances = terminate_instances


# --- DeleteKeyPair by KeyPairId ------------------------------------------------
# AWS: DeleteKeyPair takes KeyName or KeyPairId; moto reads only KeyName (and,
# like AWS for a name, answers success for a key pair that does not exist).
_orig_delete_key_pair = EC2Response.delete_key_pair


def delete_key_pair(self):
    kid = self._get_param("KeyPairId")
    if kid and not self._get_param("KeyName"):
        self.error_on_dryrun()
        backend = self.ec2_backend
        for name, kp in list(backend.key_pairs.items()):
            if kp.id == kid:
                backend.delete_key_pair(name)
                return ActionResult({"Return": True, "KeyPairId": kid})
        return ActionResult({"Return": True, "KeyPairId": None})
    return _orig_delete_key_pair(self)


EC2Response.delete_key_pair = delete_key_pair


# --- AMI names ---------------------------------------------------------------
# AWS (CreateImage and CopyImage API reference, parameter Name): 3 to 128
# characters, letters, numbers, parentheses, square brackets, spaces,
# periods, slashes, dashes, single quotes, at-signs and underscores;
# anything else fails with InvalidAMIName.Malformed. moto accepts any name.
_AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")


def _check_ami_name(self):
    name = self._get_param("Name")
    if name is not None and not _AMI_NAME_RE.match(name):
        raise _err(
            "InvalidAMIName.Malformed",
            "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, "
            "'(', ')', '.', '-', '/', '[', ']', ' ', \"'\", '@' and '_' (got %r)" % name,
        )


def _with_ami_name_check(fn):
    def wrapped(self):
        _check_ami_name(self)
        return fn(self)

    return wrapped


# --- CopyImage ClientToken ---------------------------------------------------
# AWS ("Ensuring idempotency in Amazon EC2 API requests": CopyImage takes a
# client token): a CopyImage retried with the same ClientToken and the same
# parameters returns the image the first call made, without copying again;
# with a parameter changed it fails with IdempotentParameterMismatch. moto
# ignores the token (every retry makes another copy). Tokens are per
# destination region, as the call is.
def _with_copy_token(fn):
    def wrapped(self):
        token = self._get_param("ClientToken")
        if not token:
            return fn(self)
        tokens = self.ec2_backend.__dict__.setdefault("_emu_copy_tokens", {})
        params = _request_params(self)
        if token in tokens:
            image_id, params0 = tokens[token]
            if params0 != params:
                raise _err(
                    "IdempotentParameterMismatch",
                    "The client token %s was already used with different parameters." % token,
                )
            self.error_on_dryrun()
            return ActionResult({"ImageId": image_id})
        result = fn(self)
        res = getattr(result, "result", None) or getattr(result, "_result", None) or {}
        if isinstance(res, dict) and res.get("ImageId"):
            tokens[token] = (res["ImageId"], params)
        return result

    return wrapped


# --- Security groups: eventual consistency -----------------------------------
# AWS ("Eventual consistency in the Amazon EC2 API",
# https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html):
# a resource just created may not be visible to the next calls; using a
# security group right after CreateSecurityGroup can fail with
# InvalidGroup.NotFound. AWS documents no duration: the window
# (--sg-propagation-ms) is a guess, 0 by default. Only RunInstances (above)
# and AuthorizeSecurityGroupIngress are affected here; DescribeSecurityGroups
# shows the group at once (unknown on AWS).
from moto.ec2.models import security_groups as sgmodels  # noqa: E402

_orig_create_security_group = sgmodels.SecurityGroupBackend.create_security_group


def create_security_group(self, *args, **kwargs):
    group = _orig_create_security_group(self, *args, **kwargs)
    if OPTS.sg_propagation > 0 and not kwargs.get("is_default") and not kwargs.get("force"):
        group._emu_visible_at = time.monotonic() + OPTS.sg_propagation
    return group


sgmodels.SecurityGroupBackend.create_security_group = create_security_group

_orig_authorize_ingress = EC2Response.authorize_security_group_ingress


def authorize_security_group_ingress(self):
    gid = self._get_param("GroupId")
    if gid and _unpropagated_groups(self.ec2_backend, [gid]):
        raise _err("InvalidGroup.NotFound", "The security group '%s' does not exist" % gid)
    return _orig_authorize_ingress(self)


# --- SSM: asynchronous validation of aws:ec2:image parameters ----------------
# AWS ("Parameter data types in Parameter Store" and PutParameter's
# DataType, https://docs.aws.amazon.com/systems-manager/latest/userguide/
# parameter-store-ec2-aliases.html): for DataType aws:ec2:image, a 200 from
# PutParameter does not mean the version was written: the value is
# validated asynchronously after PutParameter returns, and if validation
# fails (not an AMI id, or no such AMI available to the account) the
# parameter is not created or updated. moto writes at once.
#
# Emulated: such a put answers with the version it will get (the last
# written one plus the puts still pending, plus one) and is written only
# --ssm-image-validation-ms later, when the next SSM call (or
# DescribeImageReferences) comes; until then GetParameter, the history,
# labels and listings do not see it. With --ssm-validate-image-exists the
# AMI must exist (and be available) in the region when the version is
# written, else the version is dropped; otherwise only the id's format is
# checked. Guesses, where AWS documents nothing: the duration (0 by
# default); that PutParameter without Overwrite refuses a name with a put
# still pending (ParameterAlreadyExists); that DeleteParameter drops pending
# puts; the numbering after a put whose validation failed.
from moto.ssm import models as ssmmodels  # noqa: E402

_AMI_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
_ssm_lock = threading.RLock()
_orig_put_parameter = ssmmodels.SimpleSystemManagerBackend.put_parameter


def _ssm_pending(backend):
    return backend.__dict__.setdefault("_emu_pending_params", {})


def _image_valid(backend, value):
    if not _AMI_ID_RE.match(value or ""):
        return False
    if not OPTS.ssm_validate_image_exists:
        return True
    from moto.ec2.models import ec2_backends

    ami = ec2_backends[backend.account_id][backend.region_name].amis.get(value)
    return ami is not None and getattr(ami, "state", "available") == "available"


def _apply_due(backend):
    pending = _ssm_pending(backend)
    now = time.monotonic()
    with _ssm_lock:
        for name in list(pending):
            queue = pending[name]
            while queue and queue[0][0] <= now:
                _, args, kwargs = queue.pop(0)
                if _image_valid(backend, args[2]):
                    try:
                        _orig_put_parameter(backend, *args, **kwargs)
                    except Exception:  # refused when written: the version is not created
                        pass
            if not queue:
                del pending[name]


def put_parameter(self, name, description, value, parameter_type, allowed_pattern, keyid, overwrite, tags,
                  data_type, tier=None, policies=None):
    args = (name, description, value, parameter_type, allowed_pattern, keyid, overwrite, tags, data_type)
    kwargs = {"tier": tier, "policies": policies}
    if data_type != "aws:ec2:image" or OPTS.ssm_image_validation <= 0:
        _apply_due(self)
        return _orig_put_parameter(self, *args, **kwargs)
    with _ssm_lock:
        _apply_due(self)
        versions = self._parameters.get(name) if name in self._parameters else None
        queue = _ssm_pending(self).get(name, [])
        last = (versions[-1].version if versions else 0) + len(queue)
        if last > 0 and not overwrite:
            raise ssmmodels.ParameterAlreadyExists
        if not value:
            # synchronous, as every put: an empty value is a validation error
            return _orig_put_parameter(self, *args, **kwargs)
        due = time.monotonic() + OPTS.ssm_image_validation
        # later puts of the same name are written with Overwrite (their
        # version follows the pending one)
        wargs = args if last == 0 else args[:6] + (True,) + args[7:]
        _ssm_pending(self).setdefault(name, []).append((due, wargs, kwargs))
        return types.SimpleNamespace(version=last + 1, tier=tier or self.default_parameter_tier)


ssmmodels.SimpleSystemManagerBackend.put_parameter = put_parameter


def _applying_due(method):
    orig = getattr(ssmmodels.SimpleSystemManagerBackend, method)

    def wrapped(self, *args, **kwargs):
        _apply_due(self)
        if method == "delete_parameter" and args:
            _ssm_pending(self).pop(args[0], None)
        return orig(self, *args, **kwargs)

    setattr(ssmmodels.SimpleSystemManagerBackend, method, wrapped)


_orig_describe_image_references = describe_image_references


def describe_image_references_applying(self):
    try:
        from moto.ssm.models import ssm_backends

        _apply_due(ssm_backends[self.ec2_backend.account_id][self.ec2_backend.region_name])
    except Exception:  # SSM not used in this account/region
        pass
    return _orig_describe_image_references(self)


EC2Response.create_image = _with_ami_name_check(EC2Response.create_image)
EC2Response.copy_image = _with_ami_name_check(_with_copy_token(EC2Response.copy_image))
EC2Response.authorize_security_group_ingress = authorize_security_group_ingress
EC2Response.describe_image_references = describe_image_references_applying
for _m in ("get_parameter", "get_parameters", "get_parameter_history", "get_parameters_by_path",
           "describe_parameters", "label_parameter_version", "unlabel_parameter_version",
           "delete_parameter", "delete_parameters"):
    _applying_due(_m)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-capacity-types", default="")
    p.add_argument("--image-pending-polls", type=int, default=2)
    p.add_argument("--snapshot-inuse-after-deregister", type=int, default=1)
    p.add_argument("--ssm-image-validation-ms", type=int, default=0)
    p.add_argument("--ssm-validate-image-exists", action="store_true")
    p.add_argument("--sg-propagation-ms", type=int, default=0)
    a = p.parse_args()
    OPTS.no_capacity_types = {t for t in a.no_capacity_types.split(",") if t}
    OPTS.image_pending_polls = a.image_pending_polls
    OPTS.snapshot_inuse_after_deregister = a.snapshot_inuse_after_deregister
    OPTS.ssm_image_validation = a.ssm_image_validation_ms / 1000.0
    OPTS.ssm_validate_image_exists = a.ssm_validate_image_exists
    OPTS.sg_propagation = a.sg_propagation_ms / 1000.0
    sys.stdout.write("crabbox moto launcher: extensions loaded\n")
    sys.stdout.flush()
    moto.server.main(["-H", a.host, "-p", str(a.port)])


if __name__ == "__main__":
    main()
