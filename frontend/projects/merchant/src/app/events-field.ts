import { Component, OnInit, inject, input, model } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatSelectModule } from '@angular/material/select';

import { Catalog } from './catalog';
import { normalizeEvents } from './figures';

/** Picks event types from the catalog (or "*", all of them) for a webhook endpoint. */
@Component({
  selector: 'pm-events-field',
  imports: [FormsModule, MatFormFieldModule, MatSelectModule],
  template: `
    <mat-form-field appearance="outline" subscriptSizing="dynamic" class="events">
      <mat-label>Events to send</mat-label>
      <mat-select multiple [ngModel]="value()" (ngModelChange)="value.set(normalize($event))" [name]="name()"
                  required [attr.data-testid]="testId()">
        <mat-option value="*">All events (*)</mat-option>
        @for (t of catalog.types(); track t.name) {
          <mat-option [value]="t.name" [disabled]="value().includes('*')" [attr.title]="t.description">{{ t.name }}</mat-option>
        }
      </mat-select>
    </mat-form-field>
  `,
  styles: `.events { width: 22rem; }`,
})
export class EventsField implements OnInit {
  readonly catalog = inject(Catalog);
  readonly value = model<string[]>([]);
  readonly name = input('events');
  readonly testId = input('endpoint-events');
  readonly normalize = normalizeEvents;

  ngOnInit(): void {
    // A failure shows as an empty list; the page that saves reports the API's refusal.
    this.catalog.load().catch(() => undefined);
  }
}
