"""The llmfleet Pulumi program: one client environment per stack.

Pulumi runs this directory (`main: infra/` in Pulumi.yaml) with runpy, which puts infra/ on
sys.path; that is why `deployment` imports as a top-level module. The tests run it the same way.
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
