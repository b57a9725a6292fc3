// Channel listing for cleanup: ListChannels, the channel parameters under
// the SSM prefix.

package awsec2

import (
	"context"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/crabbox/crabbox-go/provider"
)

var _ provider.ChannelLister = (*Driver)(nil)

// ListChannels implements provider.ChannelLister: the names of the
// parameters directly under the SSM prefix that are valid channel names,
// read with DescribeParameters (metadata only, no values).
func (d *Driver) ListChannels(ctx context.Context) ([]string, error) {
	pr, ok := d.ssm.(ssmParameterReader)
	if !ok {
		return nil, provider.Errorf(provider.ErrUnsupported, "awsec2: the SSM client cannot list parameters")
	}
	path := strings.TrimSuffix(d.o.ssmPrefix, "/")
	if path == "" {
		path = "/"
	}
	p := ssm.NewDescribeParametersPaginator(pr, &ssm.DescribeParametersInput{ParameterFilters: []ssmtypes.ParameterStringFilter{
		{Key: aws.String("Path"), Option: aws.String("OneLevel"), Values: []string{path}},
	}})
	var out []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, m := range page.Parameters {
			ch, ok := strings.CutPrefix(aws.ToString(m.Name), d.o.ssmPrefix)
			if ok && channelRe.MatchString(ch) {
				out = append(out, ch)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
