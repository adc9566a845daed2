"""Every interface of the suite round-trips across two processes over DDS."""
import pytest
import rclpy
from rclpy.action import ActionClient

import world_model_planning.action as actions
import world_model_planning.msg as msgs
import world_model_planning.srv as srvs
from support.echo_node import interface_classes
from support.fill import fill
from support.graph import ask, ros_context, ros_process, spin_until


@pytest.fixture(scope="module")
def node():
    with ros_context(), ros_process(["-m", "support.echo_node"], ready_line="ready"):
        n = rclpy.create_node("interface_test")
        yield n
        n.destroy_node()


@pytest.mark.parametrize("name", sorted(interface_classes(msgs)))
def test_message_round_trip(node, name):
    cls = interface_classes(msgs)[name]
    sent = fill(cls(), 1)
    received = []
    sub = node.create_subscription(cls, f"/rt/{name}/echo", received.append, 10)
    pub = node.create_publisher(cls, f"/rt/{name}", 10)
    assert spin_until(node, lambda: pub.get_subscription_count() > 0
                      and sub.get_publisher_count() > 0, 20.0)
    assert spin_until(node, lambda: (pub.publish(sent) or bool(received)), 20.0, step=0.2)
    assert received[0] == sent
    assert received[0] != cls()  # the filler really set values


@pytest.mark.parametrize("name", sorted(interface_classes(srvs)))
def test_service_round_trip(node, name):
    cls = interface_classes(srvs)[name]
    client = node.create_client(cls, f"/rt_srv/{name}")
    response = ask(node, client, fill(cls.Request(), 1), 10.0, attempts=3)
    assert response == fill(cls.Response(), 2)
    assert response != cls.Response()


def test_action_round_trip(node):
    client = ActionClient(node, actions.PlanToGoal, "/rt_action/PlanToGoal")
    assert client.wait_for_server(timeout_sec=20.0)
    feedback = []
    goal_future = client.send_goal_async(fill(actions.PlanToGoal.Goal(), 1),
                                         feedback_callback=lambda f: feedback.append(f.feedback))
    assert spin_until(node, goal_future.done, 20.0)
    handle = goal_future.result()
    assert handle.accepted
    result_future = handle.get_result_async()
    assert spin_until(node, result_future.done, 20.0)
    assert result_future.result().result == fill(actions.PlanToGoal.Result(), 2)
    assert spin_until(node, lambda: bool(feedback), 5.0)
    assert feedback[0] == fill(actions.PlanToGoal.Feedback(), 3)
