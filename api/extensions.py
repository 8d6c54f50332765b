"""Extensions resource: the whole shared namespace (users now; queues and menus join later)."""

from __future__ import annotations

from pydantic import BaseModel

from api.routing import ANY_ROLE, ApiRequest, RouteTable
from extensions import phones
from extensions.numbering import OwnerType

routes = RouteTable()


class ExtensionHolder(BaseModel):
    type: OwnerType
    id: int
    name: str | None


class ExtensionOut(BaseModel):
    extension: str
    holder: ExtensionHolder


class ExtensionList(BaseModel):
    items: list[ExtensionOut]


@routes.add(
    "GET",
    "/extensions",
    summary="List the extension namespace",
    tag="extensions",
    roles=ANY_ROLE,
    response=ExtensionList,
    errors=(401,),
)
async def list_extensions(req: ApiRequest) -> ExtensionList:
    records = await phones.list_extensions(req.ctx)
    return ExtensionList(
        items=[
            ExtensionOut(
                extension=r.extension,
                holder=ExtensionHolder(type=r.holder_type, id=r.holder_id, name=r.holder_name),
            )
            for r in records
        ]
    )
