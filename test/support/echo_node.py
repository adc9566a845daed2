"""Echo every interface of world_model_planning across a process boundary (round-trip tests).

Messages on /rt/<Name> come back on /rt/<Name>/echo. Services /rt_srv/<Name> and the action
/rt_action/PlanToGoal answer with fill(Response, 2) / fill(Result, 2) if the request equals
fill(Request, 1), and an empty one otherwise.
"""
import inspect

import rclpy
from rclpy.action import ActionServer
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

import world_model_planning.action as actions
import world_model_planning.msg as msgs
import world_model_planning.srv as srvs
from support.fill import fill


def interface_classes(module):
    """Generated interface classes of a module (msg, srv or action)."""
    return {n: c for n, c in inspect.getmembers(module, inspect.isclass)
            if not n.startswith("_") and hasattr(c, "__module__")
            and c.__module__.startswith(module.__name__) and "_" not in n}


class Echo(Node):
    def __init__(self):
        super().__init__("interface_echo")
        self.keep = []
        for name, cls in interface_classes(msgs).items():
            pub = self.create_publisher(cls, f"/rt/{name}/echo", 10)
            self.keep.append(self.create_subscription(
                cls, f"/rt/{name}", lambda m, p=pub: p.publish(m), 10))
        for name, cls in interface_classes(srvs).items():
            self.keep.append(self.create_service(cls, f"/rt_srv/{name}", self._serve))
        self.keep.append(ActionServer(self, actions.PlanToGoal, "/rt_action/PlanToGoal",
                                      self._execute))

    @staticmethod
    def _serve(request, response):
        expected = fill(type(request)(), 1)
        return fill(response, 2) if request == expected else response

    @staticmethod
    def _execute(handle):
        if handle.request != fill(actions.PlanToGoal.Goal(), 1):
            handle.abort()
            return actions.PlanToGoal.Result()
        handle.publish_feedback(fill(actions.PlanToGoal.Feedback(), 3))
        handle.succeed()
        return fill(actions.PlanToGoal.Result(), 2)


def main():
    rclpy.init()
    node = Echo()
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
