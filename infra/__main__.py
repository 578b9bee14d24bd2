"""The llmfleet Pulumi program: one client environment per stack.

Pulumi runs this directory (`main: infra/` in Pulumi.yaml) with runpy, which puts infra/ on
sys.path; that is why `deployment` and the component modules beside it import as top-level
modules. The tests run it the same way.
"""

import pulumi
from deployment import Deployment, DeploymentArgs

from llmfleet.config import ConfigError, load_pulumi_stack

# First, before any resource is registered: a bad value stops the run with nothing created.
# RunError makes Pulumi print just the list of problems, without a Python traceback.
try:
    config = load_pulumi_stack()
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None

deployment = Deployment(config.stack_name, DeploymentArgs(config=config))

pulumi.export("client", deployment.client)
pulumi.export("environment", deployment.environment)
pulumi.export("model", deployment.model)
pulumi.export("strategy", deployment.strategy)
pulumi.export("tags", deployment.tags)
pulumi.export("endpoint", deployment.endpoint)
pulumi.export("spot_group", deployment.spot_group)
pulumi.export("on_demand_group", deployment.on_demand_group)
pulumi.export("edge_group", deployment.edge_group)
pulumi.export("vpc_id", deployment.vpc_id)
pulumi.export("drain_log_group", deployment.drain_log_group)
pulumi.export("scaler_log_group", deployment.scaler_log_group)
pulumi.export("monitor_instance", deployment.monitor_instance)
pulumi.export("monitor_port_forwards", deployment.monitor_port_forwards)
pulumi.export("grafana_password_command", deployment.grafana_password_command)
pulumi.export("budget_name", deployment.budget_name)
