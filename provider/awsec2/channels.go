// Promotion channels as SSM parameters, known-good version labels.

package awsec2

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/crabbox/crabbox-go/provider"
)

// KnownGoodLabel is the SSM parameter version label MarkKnownGood sets.
const KnownGoodLabel = "known-good"

var channelRe = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,64}$`)

const operatorPrefix = "crabbox promotion by "

func (d *Driver) paramName(channel string) (string, error) {
	if !channelRe.MatchString(channel) {
		return "", provider.Errorf(provider.ErrInvalidArgument, "awsec2: bad channel name %q", channel)
	}
	return d.o.ssmPrefix + channel, nil
}

// ParameterName returns the SSM parameter that stores a channel, e.g.
// "/crabbox/images/default"; EC2 launches can use it as
// "resolve:ssm:/crabbox/images/default".
func (d *Driver) ParameterName(channel string) (string, error) { return d.paramName(channel) }

// CurrentChannel implements provider.Channels.
func (d *Driver) CurrentChannel(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	name, err := d.paramName(channel)
	if err != nil {
		return nil, err
	}
	out, err := d.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	if err != nil {
		return nil, mapErr(err)
	}
	p := out.Parameter
	if p == nil {
		return nil, provider.Errorf(provider.ErrNotFound, "awsec2: channel %s", channel)
	}
	e := &provider.ChannelEntry{Channel: channel, ImageID: aws.ToString(p.Value), Version: p.Version}
	if p.LastModifiedDate != nil {
		e.At = p.LastModifiedDate.UTC()
	}
	// GetParameter does not return the description the operator is kept
	// in; the newest history entry has it.
	if h, err := d.ChannelHistory(ctx, channel); err == nil {
		for _, he := range h {
			if he.Version == e.Version {
				e.Operator, e.Proof = he.Operator, he.Proof
			}
		}
	}
	return e, nil
}

// SetChannel implements provider.Channels: PutParameter with DataType
// aws:ec2:image (so launches can resolve it), the operator in the version's
// description.
//
// SSM validates aws:ec2:image values asynchronously: PutParameter answers
// with the new version before it is written, and never writes it when the
// image fails validation. SetChannel therefore returns only once the
// version it wrote is readable (GetParameter name:version, with backoff, up
// to WithChannelWriteWait): reads after it see the promotion. A version
// that does not appear in time is an error, not an entry: ErrInvalidArgument
// when EC2 does not describe the image, ErrUnavailable otherwise. The
// IfVersion check likewise waits for a version the caller names that does
// not read yet, instead of calling it a conflict.
//
// SSM has no compare-and-set. IfVersion -1 ("never set") is exact: the put
// does not overwrite. For IfVersion > 0 the driver reads the current version,
// refuses if it differs, writes, and then checks that its write got exactly
// IfVersion+1. If not, another promotion landed in between: the driver
// reports ErrConflict with no entry (the set lost, whatever SSM's history
// shows) and, if its own write is still the newest version,
// writes the value it displaced back (a compensating version, visible in the
// history) so the concurrent promotion is not silently overwritten.
//
// Readers can see the losing value: from the moment the losing write lands
// until the compensating write lands (normally two SSM round trips; at most
// 30 seconds), GetParameter and launches resolving
// resolve:ssm:<parameter> get the image of the promotion that lost. The
// compensation runs on a context detached from the caller's cancellation
// (bounded by 30 seconds), so a caller giving up mid-way does not
// leave the losing value in place. If the compensation itself fails, the
// losing value stays current: the returned error then joins the ErrConflict
// with a *CompensationError naming the version that was not restored, and
// an operator must re-promote. A third writer between the conflicting write
// and the compensation is not detected by the compensation itself (it sees
// its own write is no longer newest and leaves the channel alone).
func (d *Driver) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	name, err := d.paramName(req.Channel)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(req.ImageID, "ami-") {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: %q is not an AMI id", req.ImageID)
	}
	if req.IfVersion < -1 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: bad IfVersion %d", req.IfVersion)
	}
	if req.IfVersion > 0 {
		cur, err := d.currentAtLeast(ctx, req.Channel, name, req.IfVersion)
		if errors.Is(err, provider.ErrNotFound) {
			return nil, provider.Errorf(provider.ErrConflict, "awsec2: channel %s was never set (expected version %d)", req.Channel, req.IfVersion)
		}
		if err != nil {
			return nil, err
		}
		if cur.Version != req.IfVersion {
			return nil, provider.Errorf(provider.ErrConflict, "awsec2: channel %s is at version %d (image %s), expected %d",
				req.Channel, cur.Version, cur.ImageID, req.IfVersion)
		}
	}
	desc := channelDescription(req.Operator, req.Proof)
	out, err := d.ssm.PutParameter(ctx, &ssm.PutParameterInput{
		Name:        aws.String(name),
		Value:       aws.String(req.ImageID),
		Type:        ssmtypes.ParameterTypeString,
		DataType:    aws.String("aws:ec2:image"),
		Description: aws.String(desc),
		Overwrite:   aws.Bool(req.IfVersion != -1),
	})
	if err != nil {
		if apiCode(err) == "ParameterAlreadyExists" {
			return nil, provider.Errorf(provider.ErrConflict, "awsec2: channel %s was set concurrently", req.Channel)
		}
		return nil, mapErr(err)
	}
	if req.IfVersion > 0 && out.Version != req.IfVersion+1 {
		// Lost: no entry, only the conflict (see provider.Channels), so
		// callers do not take the losing write for a promotion.
		conflict := provider.Errorf(provider.ErrConflict, "awsec2: channel %s: another promotion landed between version %d and this write (version %d)",
			req.Channel, req.IfVersion, out.Version)
		if cerr := d.compensate(ctx, req, name, out.Version); cerr != nil {
			return nil, errors.Join(conflict, cerr)
		}
		return nil, conflict
	}
	entry := &provider.ChannelEntry{Channel: req.Channel, ImageID: req.ImageID, Version: out.Version, Operator: req.Operator,
		Proof: req.Proof, At: d.o.now().UTC()}
	if err := d.waitWritten(ctx, name, out.Version, req.ImageID); err != nil {
		if errors.Is(err, provider.ErrInvalidArgument) {
			return nil, err // SSM refused the image: no promotion
		}
		// SSM accepted the write as this version, but it is not readable
		// yet (or the caller stopped waiting): it lands once SSM validated
		// an image EC2 describes. Say so with the entry, as for a channel
		// that moved while follow-up work failed: a retry of this
		// conditional write could only collide with it and read as a
		// concurrent promotion.
		return entry, err
	}
	return entry, nil
}

// currentAtLeast is CurrentChannel, except that when the channel reads
// older than version (or unset), it waits, up to the channel write wait,
// for version to become readable and reads again: a version a writer was
// given by PutParameter may not be readable yet (SSM validates
// aws:ec2:image values asynchronously), and the caller naming it is not in
// conflict with anyone.
func (d *Driver) currentAtLeast(ctx context.Context, channel, name string, version int64) (*provider.ChannelEntry, error) {
	cur, err := d.CurrentChannel(ctx, channel)
	if (err == nil && cur.Version >= version) || (err != nil && !errors.Is(err, provider.ErrNotFound)) {
		return cur, err
	}
	if werr := d.waitReadable(ctx, name, version); werr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return cur, err // never became readable: the first read stands
	}
	return d.CurrentChannel(ctx, channel)
}

// errNotReadable reports a version waitReadable did not see in time.
var errNotReadable = errors.New("version not readable")

// waitReadable polls GetParameter for version of the parameter name until
// it is readable, with backoff, for at most the channel write wait.
// Not-found answers (the version is not written yet) and transient failures
// are waited out; others are returned. It returns errNotReadable (wrapped)
// when the wait ends first.
func (d *Driver) waitReadable(ctx context.Context, name string, version int64) error {
	wctx, cancel := context.WithTimeout(ctx, d.o.channelWait)
	defer cancel()
	sel := name + ":" + strconv.FormatInt(version, 10)
	delay := 20 * time.Millisecond
	for {
		out, err := d.ssm.GetParameter(wctx, &ssm.GetParameterInput{Name: aws.String(sel)})
		if err == nil && out.Parameter != nil && out.Parameter.Version == version {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && wctx.Err() == nil {
			if merr := mapErr(err); !errors.Is(merr, provider.ErrNotFound) && !provider.Retryable(merr) {
				return merr
			}
		}
		if wctx.Err() != nil || d.o.sleep(wctx, delay) != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("awsec2: %s version %d after %v: %w", name, version, d.o.channelWait, errNotReadable)
		}
		delay = min(2*delay, time.Second)
	}
}

// waitWritten waits until the version a PutParameter of image returned is
// readable. SSM answers a put of data type aws:ec2:image before it
// validated the image, and writes nothing when the validation fails: a
// version that does not become readable in time is no promotion. It is
// then ErrInvalidArgument when EC2 does not describe the image (SSM refused
// it), ErrUnavailable otherwise (the write still lands; SetChannel returns
// its entry with the error).
func (d *Driver) waitWritten(ctx context.Context, name string, version int64, image string) error {
	err := d.waitReadable(ctx, name, version)
	if err == nil || !errors.Is(err, errNotReadable) {
		return err
	}
	if _, ierr := d.describeImage(ctx, image); errors.Is(ierr, provider.ErrNotFound) {
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: SSM did not write %s version %d: image %s is not available (aws:ec2:image validation)",
			name, version, image)
	}
	return provider.Wrap(provider.ErrUnavailable, err)
}

// compensationTimeout bounds the compensating write SetChannel makes after
// a lost conditional set, on a context detached from the caller's.
const compensationTimeout = 30 * time.Second

// CompensationError reports that SetChannel lost a race and could not
// restore the value its write displaced: the channel still serves the
// losing image (Losing, at version Version) until someone re-promotes.
// SetChannel joins it with an ErrConflict. It deliberately does not unwrap
// to Err: a retry of the same SetChannel cannot repair the channel (it only
// sees the version moved on), so the joined error must not look retryable.
type CompensationError struct {
	Channel string
	Version int64  // the losing write that is still current
	Losing  string // its image
	Err     error  // why restoring failed
}

func (e *CompensationError) Error() string {
	return fmt.Sprintf("awsec2: channel %s: could not restore the value displaced by losing version %d (%s), which may still be current: %v",
		e.Channel, e.Version, e.Losing, e.Err)
}

// compensate restores the value our conflicting write displaced, if our
// write is still the newest version. It runs detached from ctx's
// cancellation, bounded by compensationTimeout.
func (d *Driver) compensate(ctx context.Context, req provider.SetChannelRequest, name string, ours int64) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensationTimeout)
	defer cancel()
	fail := func(err error) error {
		return &CompensationError{Channel: req.Channel, Version: ours, Losing: req.ImageID, Err: err}
	}
	// Our write may not be readable yet (SSM validates aws:ec2:image
	// asynchronously): the history read before it lands would not show it
	// newest, and the compensation would wrongly leave the channel alone.
	if err := d.waitReadable(cctx, name, ours); err != nil {
		return fail(err)
	}
	h, err := d.ChannelHistory(cctx, req.Channel)
	if err != nil {
		return fail(err)
	}
	if len(h) < 2 || h[len(h)-1].Version != ours {
		return nil // someone wrote after us: the channel is theirs, leave it
	}
	prev := h[len(h)-2]
	in := &ssm.PutParameterInput{
		Name:        aws.String(name),
		Value:       aws.String(prev.ImageID),
		Type:        ssmtypes.ParameterTypeString,
		DataType:    aws.String("aws:ec2:image"),
		Description: aws.String(channelDescription(prev.Operator, prev.Proof) + " (restored after a conflicting promotion by " + req.Operator + ")"),
		Overwrite:   aws.Bool(true),
	}
	// Nobody retries this write for us (the caller only sees a conflict),
	// so a transient failure is retried here, unless the SDK's retryer
	// already retries each request (one layer retries, never both).
	attempts := 3
	if d.RetriesRequests() {
		attempts = 1
	}
	for i := 1; ; i++ {
		var out *ssm.PutParameterOutput
		out, err = d.ssm.PutParameter(cctx, in)
		if err == nil {
			if werr := d.waitReadable(cctx, name, out.Version); werr != nil {
				return fail(werr)
			}
			return nil
		}
		err = mapErr(err)
		if i >= attempts || !provider.Retryable(err) || cctx.Err() != nil {
			return fail(err)
		}
		if serr := sleepCtx(cctx, time.Duration(i)*100*time.Millisecond); serr != nil {
			return fail(err)
		}
	}
}

// ChannelHistory implements provider.Channels from GetParameterHistory,
// oldest first.
func (d *Driver) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	name, err := d.paramName(channel)
	if err != nil {
		return nil, err
	}
	var res []provider.ChannelEntry
	p := ssm.NewGetParameterHistoryPaginator(d.ssm, &ssm.GetParameterHistoryInput{Name: aws.String(name)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, h := range out.Parameters {
			e := provider.ChannelEntry{Channel: channel, ImageID: aws.ToString(h.Value), Version: h.Version}
			if h.LastModifiedDate != nil {
				e.At = h.LastModifiedDate.UTC()
			}
			e.Operator, e.Proof = parseDescription(aws.ToString(h.Description))
			res = append(res, e)
		}
	}
	return res, nil
}

// channelDescription is a channel version's parameter description:
// "crabbox promotion by <operator> [proof <proof>]", the parts present.
func channelDescription(operator, proof string) string {
	desc := "crabbox promotion"
	if operator != "" {
		desc = operatorPrefix + operator
	}
	if proof != "" {
		desc += " " + proofOpen + provider.SanitizeLabelValue(proof) + "]"
	}
	return desc
}

const proofOpen = "[proof "

// parseDescription reads what channelDescription wrote.
func parseDescription(desc string) (operator, proof string) {
	if i := strings.Index(desc, " "+proofOpen); i >= 0 {
		rest := desc[i+len(proofOpen)+1:]
		if j := strings.IndexByte(rest, ']'); j >= 0 {
			proof = rest[:j]
		}
		desc = desc[:i]
	}
	if !strings.HasPrefix(desc, operatorPrefix) {
		return "", proof
	}
	operator = strings.TrimPrefix(desc, operatorPrefix)
	if i := strings.Index(operator, " (restored"); i >= 0 {
		operator = operator[:i]
	}
	return operator, proof
}

// MarkKnownGood puts the "known-good" label on a channel version (SSM moves
// the label from the version that had it), in addition to the image labels
// the SDK writes. KnownGoodVersion reads it back.
func (d *Driver) MarkKnownGood(ctx context.Context, channel string, version int64) error {
	name, err := d.paramName(channel)
	if err != nil {
		return err
	}
	if version < 1 {
		// SSM parameter versions start at 1; passed on, 0 labels a version
		// nobody named.
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: channel %q has no version %d", channel, version)
	}
	out, err := d.ssm.LabelParameterVersion(ctx, &ssm.LabelParameterVersionInput{
		Name: aws.String(name), ParameterVersion: aws.Int64(version), Labels: []string{KnownGoodLabel},
	})
	if err != nil {
		return mapErr(err)
	}
	if len(out.InvalidLabels) > 0 {
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: SSM refused labels %v", out.InvalidLabels)
	}
	return nil
}

// KnownGoodVersion returns the channel entry carrying the known-good label.
func (d *Driver) KnownGoodVersion(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	name, err := d.paramName(channel)
	if err != nil {
		return nil, err
	}
	out, err := d.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name + ":" + KnownGoodLabel)})
	if err != nil {
		return nil, mapErr(err)
	}
	if out.Parameter == nil {
		return nil, provider.Errorf(provider.ErrNotFound, "awsec2: channel %s has no known-good version", channel)
	}
	e := &provider.ChannelEntry{Channel: channel, ImageID: aws.ToString(out.Parameter.Value), Version: out.Parameter.Version}
	if out.Parameter.LastModifiedDate != nil {
		e.At = out.Parameter.LastModifiedDate.UTC()
	}
	return e, nil
}

// DeleteChannel deletes a channel's parameter with its whole history. Gone
// already is ErrNotFound. Only for tests and decommissioning: the history is
// the promotion audit trail.
func (d *Driver) DeleteChannel(ctx context.Context, channel string) error {
	name, err := d.paramName(channel)
	if err != nil {
		return err
	}
	_, err = d.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
	return mapErr(err)
}
