"""placeholder"""
def handle(api, req, **kw):
    from minipod.api.status import ApiError
    raise ApiError(501, "exec: not yet")
